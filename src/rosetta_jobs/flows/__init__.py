"""The flow engine: the editor's graphs compiled to DuckDB SQL, previewed, described and executed.

``graph`` reads and checks a graph, ``compiler`` turns it into one SQL body per node (pure: no DuckDB,
no I/O), ``sandbox`` proves each body reads only what the graph names, ``work`` runs the DuckDB side
(in an executor process), ``writer`` writes outputs to Postgres destinations, ``runs`` persists a
run for the backend, ``runner`` ties the worker's side together and ``linked`` runs linked tasks.
Nothing here imports the actors or the middleware.
"""
