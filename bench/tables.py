"""What the benchmarks' databases hold: the source table and the credential key, and nothing that runs.

Apart from ``common`` (which claims Redis databases when imported) so that the multi-host rig, which runs
its own Redis, can seed the same table.
"""

#: The bench's ``CREDENTIAL_ENCRYPTION_KEY`` (the source's password is encrypted with it in the config DB).
KEY = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="

#: The 12-column source table, ``%s`` rows.
EVENTS = """
CREATE TABLE public.events (
    id bigint PRIMARY KEY, user_id int, kind text, amount numeric(12,2), ratio double precision, ok boolean,
    created_at timestamptz, day date, label text, payload jsonb, code uuid, note text
);
INSERT INTO public.events
SELECT g, g % 5000, (ARRAY['click','view','buy','refund'])[1 + g % 4], round((g * 7.31)::numeric % 10000, 2),
       g / 7.0, g % 3 = 0, timestamptz '2026-01-01 00:00+00' + g * interval '13 seconds',
       date '2020-01-01' + (g % 2000), 'label-' || (g % 997),
       jsonb_build_object('n', g, 'tags', jsonb_build_array('a', g % 10)),
       md5(g::text)::uuid, repeat('x', g % 40)
FROM generate_series(1, %s) g;
"""
