// rosetta-jobs queue dashboard: reads /admin/api/overview every few seconds and draws it.
// Plain DOM, no libraries, no network beyond this service. Text from the server is only
// ever set through textContent, never parsed as HTML.
"use strict";

(function () {
  const ROOT = document.body.dataset.root || "";
  const FINAL_STATES = (document.body.dataset.finalStates || "").split(" ");
  const API = ROOT + "/admin/api";
  const REFRESH_MS = 3000;
  const COLORS = ["#2557d6", "#d6452f", "#1e7b34", "#a15c00", "#7a3fc2", "#00838f", "#c2185b", "#546e7a"];
  const followed = new Map(); // task id -> last status
  const drawn = new Map(); // table id -> the data it shows, so unchanged tables are left alone

  // Whether a table's data changed since it was drawn; redrawing an unchanged table would
  // close what the operator opened and disarm what they armed.
  function changed(id, data) {
    const text = JSON.stringify(data);
    if (drawn.get(id) === text) return false;
    drawn.set(id, text);
    return true;
  }

  function el(tag, props, children) {
    const node = document.createElement(tag);
    Object.entries(props || {}).forEach(([key, value]) => {
      if (key === "text") node.textContent = value;
      else if (key === "className") node.className = value;
      else if (key.startsWith("data-")) node.setAttribute(key, value);
      else node[key] = value;
    });
    (children || []).forEach((child) => node.appendChild(child));
    return node;
  }

  function td(text, className) {
    return el("td", { text: text === null || text === undefined ? "" : String(text), className: className || "" });
  }

  function fill(tableId, rows, emptyText, columns) {
    const body = document.querySelector("#" + tableId + " tbody");
    body.replaceChildren(...rows);
    if (!rows.length) body.appendChild(el("tr", {}, [el("td", { text: emptyText, className: "empty", colSpan: columns })]));
  }

  function when(seconds) {
    return new Date(seconds * 1000).toLocaleString();
  }

  function ago(seconds) {
    if (seconds < 60) return seconds.toFixed(1) + " s ago";
    return Math.round(seconds / 60) + " min ago";
  }

  async function call(method, path) {
    const response = await fetch(API + path, {
      method,
      credentials: "same-origin",
      headers: { Accept: "application/json" },
    });
    if (response.status === 401) {
      window.location.href = ROOT + "/admin/login";
      throw new Error("logged out");
    }
    if (!response.ok) throw new Error(method + " " + path + ": HTTP " + response.status);
    return response.json();
  }

  function button(label, onClick, className) {
    const node = el("button", { type: "button", text: label, className: className || "" });
    node.addEventListener("click", async () => {
      node.disabled = true;
      try {
        await onClick(node);
      } catch (error) {
        setStatus(String(error), true);
      } finally {
        node.disabled = false;
      }
      refresh();
    });
    return node;
  }

  // A delete or a purge needs two clicks: the first arms the button, the second acts.
  function armedButton(label, onConfirm, className) {
    return button(label, async (node) => {
      if (!node.classList.contains("armed")) {
        node.classList.add("armed");
        node.textContent = "Confirm";
        setTimeout(() => { node.classList.remove("armed"); node.textContent = label; }, 4000);
        return;
      }
      await onConfirm();
    }, "danger" + (className ? " " + className : ""));
  }

  function setStatus(text, bad) {
    const status = document.getElementById("status");
    status.textContent = text;
    status.style.color = bad ? "#ffb4ab" : "";
  }

  function renderQueues(queues) {
    if (!changed("queues", queues)) return;
    fill("queues", queues.map((q) => el("tr", { "data-queue": q.name, className: q.unconsumed ? "unconsumed" : "" }, [
      el("td", {}, q.unconsumed ? [el("span", { text: q.name + " " }), el("span", { text: "no consumer", className: "flag" })]
        : [el("span", { text: q.name })]),
      td(q.ready, "num"),
      td(q.delayed, "num"),
      td(q.in_progress, "num"),
      td(q.dead_lettered, "num"),
      td(q.consumers, "num"),
      el("td", {}, [
        button("Jobs", async () => { showWaiting(q.name); }, "show-jobs"),
        (() => {
          const node = button("Requeue all", async () => {
            const answer = await call("POST", "/queues/" + encodeURIComponent(q.name) + "/requeue-all");
            setStatus("requeued " + answer.requeued + " from " + q.name);
          }, "requeue-all");
          node.disabled = !q.dead_lettered;
          return node;
        })(),
      ]),
    ])), "No queues yet.", 7);
  }

  // Queues that hold work no live worker takes: the jobs there wait for good until one starts.
  function renderWarnings(unconsumed) {
    const box = document.getElementById("warnings");
    box.hidden = !unconsumed.length;
    box.textContent = unconsumed.length ? "Jobs are waiting on " + unconsumed.join(", ") +
      " and no live worker consumes " + (unconsumed.length === 1 ? "it" : "them") + ": start a worker for " +
      (unconsumed.length === 1 ? "that queue." : "those queues.") : "";
  }

  // --- waiting jobs of one queue, with purge ----------------------------------------------------------
  let waitingQueue = null;

  function showWaiting(name) {
    waitingQueue = name;
    drawn.delete("waiting");
    document.getElementById("waiting-queue").textContent = name;
    document.getElementById("waiting-section").hidden = false;
    const toolbar = document.querySelector("#waiting-section .toolbar");
    toolbar.replaceChildren(
      armedButton("Purge", async () => {
        const answer = await call("POST", "/queues/" + encodeURIComponent(name) + "/purge");
        setStatus("purged " + answer.purged + " from " + name + "; each is now REVOKED");
      }, "purge"),
      button("Close", async () => { hideWaiting(); }, "close-jobs"),
    );
    refreshWaiting();
  }

  function hideWaiting() {
    waitingQueue = null;
    document.getElementById("waiting-section").hidden = true;
  }

  async function refreshWaiting() {
    if (!waitingQueue) return;
    const name = waitingQueue;
    const jobs = await call("GET", "/queues/" + encodeURIComponent(name) + "/jobs?limit=100");
    if (name !== waitingQueue || !changed("waiting", jobs)) return;
    const now = Date.now() / 1000;
    fill("waiting", jobs.map((j) => el("tr", { "data-task-id": j.task_id }, [
      td(j.position, "num"), td(j.state), el("td", {}, [el("code", { text: j.task_id })]), td(j.actor),
      el("td", {}, [el("code", { text: JSON.stringify({ args: j.args, kwargs: j.kwargs }) })]), td(j.user),
      td(j.enqueued_at ? ago(now - j.enqueued_at) : ""), td(j.eta ? when(j.eta) : ""),
    ])), "Nothing is waiting in " + name + ".", 8);
  }

  // --- the Tasks tab: the task history, with filters and search by id ---------------------------------
  function seconds(value) {
    if (value === null || value === undefined) return "";
    return value < 10 ? value.toFixed(2) + " s" : value < 120 ? value.toFixed(1) + " s" : Math.round(value / 60) + " min";
  }

  function taskQuery() {
    const id = document.getElementById("task-search").value.trim();
    if (id) return "task_id=" + encodeURIComponent(id);
    const params = new URLSearchParams({ limit: "200" });
    [["state", "filter-state"], ["actor", "filter-actor"], ["user", "filter-user"], ["since_seconds", "filter-since"]]
      .forEach(([name, input]) => {
        const value = document.getElementById(input).value.trim();
        if (value) params.set(name, value);
      });
    return params.toString();
  }

  async function refreshTasks() {
    const answer = await call("GET", "/history?" + taskQuery());
    document.getElementById("tasks-kept").textContent = String(answer.kept);
    if (!changed("tasks", answer.tasks)) return;
    fill("tasks", answer.tasks.map((t) => el("tr", { "data-task-id": t.task_id }, [
      td(t.finished_at ? when(t.finished_at) : "not finished"),
      el("td", {}, [el("code", { text: t.task_id })]),
      td(t.actor), td(t.queue), td(t.state, "state state-" + t.state), td(t.user),
      el("td", {}, [el("code", { text: t.sql_digest || "" })]),
      td(seconds(t.started_at && t.finished_at ? t.finished_at - t.started_at : null), "num"),
      td(t.error_type || t.reason, "error"),
    ])), document.getElementById("task-search").value.trim() ? "No task with this id." : "No finished task matches.", 9);
  }

  function activeTab() {
    return document.querySelector(".tabs .tab.active").dataset.panel;
  }

  function showTab(panel) {
    document.querySelectorAll(".tabs .tab").forEach((tab) => tab.classList.toggle("active", tab.dataset.panel === panel));
    document.querySelectorAll(".panel").forEach((node) => { node.hidden = node.id !== panel; });
    refresh();
  }

  document.querySelectorAll(".tabs .tab").forEach((tab) => tab.addEventListener("click", () => showTab(tab.dataset.panel)));
  document.getElementById("task-filters").addEventListener("submit", (event) => {
    event.preventDefault();
    drawn.delete("tasks");
    refresh();
  });
  document.getElementById("filter-clear").addEventListener("click", () => {
    document.getElementById("task-filters").reset();
    drawn.delete("tasks");
    refresh();
  });

  function renderWorkers(workers) {
    fill("workers", workers.map((w) => el("tr", { "data-worker": w.id }, [
      td(w.id),
      td(w.queues.join(", ")),
      td(w.threads, "num"),
      td(w.busy, "num"),
      td(w.processed, "num"),
      td(w.state, "state-" + w.state),
      td(ago(w.age_seconds)),
    ])), "No worker is alive.", 7);
  }

  function renderSweeper(sweeper, now) {
    const line = document.getElementById("sweeper");
    if (!sweeper || !sweeper.last_run_at) {
      line.textContent = "The sweeper has not run yet.";
      return;
    }
    const removed = Object.entries(sweeper.removed).map(([kind, n]) => kind.replace("_", " ") + " " + n).join(", ");
    line.textContent = "Last run " + ago(now - sweeper.last_run_at) + " by " + (sweeper.last_holder || "?") +
      " (" + sweeper.runs + " runs; removed so far: " + removed + ").";
  }

  function renderDeadLetters(letters) {
    if (!changed("dead-letters", letters)) return;
    const rows = [];
    letters.forEach((letter) => {
      const path = "/queues/" + encodeURIComponent(letter.queue) + "/dead-letters/" + encodeURIComponent(letter.redis_id);
      const details = el("tr", { className: "details", hidden: true }, [el("td", { colSpan: 6 }, [
        el("div", { text: "Arguments" }),
        el("pre", { text: JSON.stringify({ args: letter.args, kwargs: letter.kwargs }, null, 2) }),
        el("div", { text: "Traceback" }),
        el("pre", { className: "traceback", text: letter.traceback || "(no traceback recorded)" }),
      ])]);
      rows.push(el("tr", { "data-task-id": letter.task_id, "data-redis-id": letter.redis_id, className: "dead-letter" }, [
        td(when(letter.dead_lettered_at)),
        td(letter.queue),
        td(letter.actor),
        el("td", {}, [el("code", { text: letter.task_id })]),
        td((letter.exc_type ? letter.exc_type + ": " : "") + (letter.error || ""), "error"),
        el("td", {}, [
          button("Details", async () => { details.hidden = !details.hidden; }, "show-details"),
          button("Requeue", async () => {
            await call("POST", path + "/requeue");
            follow(letter.task_id);
            setStatus("requeued " + letter.task_id);
          }, "requeue"),
          armedButton("Delete", async () => {
            await call("DELETE", path);
            setStatus("deleted " + letter.task_id);
          }),
        ]),
      ]));
      rows.push(details);
    });
    // Keep open details open across refreshes.
    const open = new Set([...document.querySelectorAll("#dead-letters tr.details:not([hidden])")]
      .map((row) => row.previousSibling && row.previousSibling.dataset.redisId));
    fill("dead-letters", rows, "No dead letters.", 6);
    document.querySelectorAll("#dead-letters tr.dead-letter").forEach((row) => {
      if (open.has(row.dataset.redisId)) row.nextSibling.hidden = false;
    });
  }

  function renderFailures(failures) {
    if (!changed("failures", failures)) return;
    fill("failures", failures.map((f) => el("tr", {}, [
      td(when(f.at)), td(f.actor), td(f.queue), td(f.error_type), td(f.error, "error"),
      el("td", {}, [el("code", { text: f.task_id })]),
    ])), "No failures recorded.", 6);
  }

  function follow(taskId) {
    if (!followed.has(taskId)) followed.set(taskId, { state: "PENDING", status: "queued" });
    renderFollowed();
  }

  function renderFollowed() {
    if (!changed("followed", [...followed.entries()])) return;
    document.getElementById("followed-section").hidden = followed.size === 0;
    fill("followed", [...followed.entries()].reverse().map(([id, s]) => el("tr", { "data-task-id": id }, [
      el("td", {}, [el("code", { text: id })]),
      td(s.state, "state state-" + s.state),
      td(s.status + (s.error ? ": " + s.error : "")),
    ])), "", 3);
  }

  async function refreshFollowed() {
    const pending = [...followed.entries()].filter(([, s]) => !FINAL_STATES.includes(s.state));
    await Promise.all(pending.map(async ([id]) => {
      followed.set(id, await call("GET", "/tasks/" + encodeURIComponent(id)));
    }));
    renderFollowed();
  }

  const SVG = "http://www.w3.org/2000/svg";

  function svg(tag, attrs, text) {
    const node = document.createElementNS(SVG, tag);
    Object.entries(attrs).forEach(([key, value]) => node.setAttribute(key, String(value)));
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function niceMax(value) {
    if (value <= 4) return 4;
    const power = Math.pow(10, Math.floor(Math.log10(value)));
    for (const step of [1, 2, 2.5, 5, 10]) if (step * power >= value) return step * power;
    return 10 * power;
  }

  function renderChart(history, queueNames) {
    const box = document.getElementById("chart");
    const width = 900, height = 220, left = 44, right = 12, top = 10, bottom = 26;
    const names = [...new Set([...queueNames, ...history.flatMap((s) => Object.keys(s.queues))])].sort();
    const now = Date.now() / 1000;
    const start = history.length ? Math.min(history[0].t, now - 60) : now - 60; // at least a minute wide
    const depth = (sample, name) => {
      const q = sample.queues[name];
      return q ? q[0] + q[1] : 0;
    };
    const top_value = niceMax(Math.max(0, ...history.flatMap((s) => names.map((n) => depth(s, n)))));
    const x = (t) => left + ((t - start) / Math.max(now - start, 1)) * (width - left - right);
    const y = (v) => top + (1 - v / top_value) * (height - top - bottom);
    const chart = svg("svg", { viewBox: "0 0 " + width + " " + height, role: "img", "aria-label": "queue depth" });
    for (let i = 0; i <= 4; i++) {
      const value = (top_value * i) / 4;
      chart.appendChild(svg("line", { x1: left, x2: width - right, y1: y(value), y2: y(value), class: "grid" }));
      chart.appendChild(svg("text", { x: left - 6, y: y(value) + 4, "text-anchor": "end" }, String(Math.round(value * 10) / 10)));
    }
    for (let i = 0; i <= 4; i++) {
      const t = start + ((now - start) * i) / 4;
      const label = new Date(t * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
      chart.appendChild(svg("text", { x: x(t), y: height - 8, "text-anchor": "middle" }, label));
    }
    chart.appendChild(svg("line", { x1: left, x2: left, y1: top, y2: height - bottom, class: "axis" }));
    chart.appendChild(svg("line", { x1: left, x2: width - right, y1: height - bottom, y2: height - bottom, class: "axis" }));
    const legend = el("div", { className: "legend" });
    names.forEach((name, index) => {
      const color = COLORS[index % COLORS.length];
      const points = history.map((s) => x(s.t).toFixed(1) + "," + y(depth(s, name)).toFixed(1)).join(" ");
      if (points) chart.appendChild(svg("polyline", { points, class: "line", stroke: color }));
      const item = el("span", { text: name });
      item.style.setProperty("--swatch", color);
      legend.appendChild(item);
    });
    if (!history.length) chart.appendChild(svg("text", { x: width / 2, y: height / 2, "text-anchor": "middle" }, "no samples yet"));
    box.replaceChildren(chart, legend);
  }

  let busy = false;

  async function refresh() {
    if (busy) return;
    busy = true;
    try {
      if (activeTab() === "panel-tasks") {
        await refreshTasks();
        setStatus("task history · updated " + new Date().toLocaleTimeString());
        return;
      }
      const data = await call("GET", "/overview");
      renderQueues(data.queues);
      renderWarnings(data.unconsumed || []);
      await refreshWaiting();
      renderWorkers(data.workers);
      renderSweeper(data.sweeper, data.time);
      renderDeadLetters(data.dead_letters);
      renderFailures(data.failures);
      renderChart(data.history, data.queues.map((q) => q.name));
      await refreshFollowed();
      const alive = data.workers.filter((w) => w.state === "running").length;
      setStatus(alive + " worker process" + (alive === 1 ? "" : "es") + " alive · " + data.active_tasks +
        " running · updated " + new Date(data.time * 1000).toLocaleTimeString());
    } catch (error) {
      setStatus(String(error), true);
    } finally {
      busy = false;
    }
  }

  refresh();
  setInterval(refresh, REFRESH_MS);
})();
