// The dashboard's live parts: server-sent events from /live/..., resumed by the browser
// itself after a reconnect (EventSource sends the last id it got as Last-Event-ID).
"use strict";
(function () {
  const STEP_KEYS = ["step", "global_step"];
  const MAX_LOG_CHARS = 2_000_000;
  window.owPoints = {};      // metric -> points plotted (read by the tests)
  window.owLines = [];       // [Date.now() at arrival, text] of the latest chunks (bench)

  function live(url, handlers) {
    const source = new EventSource(url);
    for (const [name, fn] of Object.entries(handlers)) {
      source.addEventListener(name, (e) => fn(JSON.parse(e.data)));
    }
    source.addEventListener("signedout", () => {
      source.close();
      location.href = "/signin?why=" + encodeURIComponent(
        "Your token was refused: it was revoked or has expired. Sign in again.") +
        "&next=" + encodeURIComponent(location.pathname);
    });
    source.addEventListener("failed", (e) => {
      source.close();
      const why = JSON.parse(e.data).why;
      const note = document.getElementById("live-failed") || document.createElement("p");
      note.id = "live-failed"; note.className = "notice"; note.textContent = "Live updates stopped: " + why;
      document.querySelector("main").prepend(note);
    });
    return source;
  }

  function el(tag, attrs, text) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function setStatus(node, status) {
    node.textContent = status;
    node.className = "status " + status;
  }

  // -- the job list --------------------------------------------------------------------
  function jobList() {
    if (!document.querySelector("#jobs-table")) return;
    live("/live/jobs", {
      job: (job) => {
        const row = document.getElementById("job-" + job.id);
        if (!row) return;
        setStatus(row.querySelector("[data-field=status]"), job.status);
        const when = row.querySelector("[data-field=updated_at]");
        if (when && job.updated_at) when.textContent = job.updated_at.replace("T", " ").slice(0, 19);
      },
    });
  }

  // -- one job -------------------------------------------------------------------------
  const plots = {};  // key -> {xs, ys, plot, box}
  let dirty = new Set(), scheduled = false;

  function addPoint(key, x, y) {
    let p = plots[key];
    if (!p) {
      const none = document.getElementById("no-plots");
      if (none) none.remove();
      const box = el("div", {"class": "plot", "data-metric": key, "data-points": "0"});
      document.getElementById("plots").append(box);
      p = plots[key] = {xs: [], ys: [], plot: null, box: box};
    }
    p.xs.push(x); p.ys.push(y);
    window.owPoints[key] = p.xs.length;
    p.box.setAttribute("data-points", String(p.xs.length));
    dirty.add(key);
    if (!scheduled) { scheduled = true; requestAnimationFrame(draw); }
  }

  function number(v) {
    if (v === null || v === undefined) return "";
    if (v !== 0 && Math.abs(v) < 1e-3) return v.toExponential(1);
    return String(+v.toPrecision(3));
  }

  function draw() {
    scheduled = false;
    for (const key of dirty) {
      const p = plots[key];
      if (!window.uPlot) { continue; }
      if (!p.plot) {
        p.plot = new uPlot({
          title: key, width: Math.max(280, p.box.clientWidth || 420), height: 200,
          scales: {x: {time: false}}, legend: {show: false},
          axes: [{}, {size: 64, values: (u, values) => values.map(number)}],
          series: [{label: "step"}, {label: key, stroke: "#2563eb", width: 2,
                                     points: {show: false}}],
        }, [p.xs, p.ys], p.box);
      } else {
        p.plot.setData([p.xs, p.ys]);
      }
    }
    dirty = new Set();
  }

  function onPoint(event) {
    const data = event.data || {};
    if (typeof data.file === "string") return addFile(data.path || data.file, data.file);
    let x = null;
    for (const k of STEP_KEYS) if (typeof data[k] === "number") { x = data[k]; break; }
    for (const [k, v] of Object.entries(data)) {
      if (typeof v !== "number" || STEP_KEYS.includes(k) || !isFinite(v)) continue;
      addPoint(k, x === null ? (plots[k] ? plots[k].xs.length : 0) : x, v);
    }
  }

  function addFile(path, fileId) {
    const list = document.getElementById("files");
    const empty = list.querySelector(".empty");
    if (empty) empty.remove();
    const item = el("li", {"data-file": fileId});
    const q = "?name=" + encodeURIComponent(path);
    item.append(el("a", {href: "/files/" + encodeURIComponent(fileId) + q}, path));
    if (/\.jsonl?$/i.test(path)) {
      item.append(" · ", el("a", {href: "/files/" + encodeURIComponent(fileId) + "/view" + q}, "view as table"));
    }
    list.append(item);
  }

  function onAudit(entry) {
    const body = document.querySelector("#timeline tbody");
    const changed = Object.entries(entry.changes || {})
      .filter(([, v]) => v !== null && !(Array.isArray(v) && !v.length) && !(typeof v === "object" && v && !Object.keys(v).length))
      .map(([k, v]) => { const t = JSON.stringify(v); return k + "=" + (t.length > 200 ? t.slice(0, 200) + "…" : t); })
      .join(", ");
    const by = entry.by.kind + (entry.by.id ? ":" + entry.by.id : "");
    const row = el("tr", {"data-event": entry.event});
    for (const text of [String(entry.seq), String(entry.at).replace("T", " ").slice(0, 19), entry.event, by, changed]) {
      row.append(el("td", {}, text));
    }
    body.append(row);
  }

  function onStatus(job) {
    setStatus(document.getElementById("job-status"), job.status);
    const ended = ["completed", "failed", "canceled"].includes(job.status);
    document.getElementById("cancel").disabled = ended;
    document.getElementById("restart").disabled = !ended;
    const err = document.getElementById("job-error");
    err.hidden = !job.error; err.textContent = job.error || "";
    const wait = document.getElementById("job-wait");
    wait.hidden = !job.wait_reason; wait.textContent = job.wait_reason || "";
    const runs = document.getElementById("runs-body");
    if (runs && window.htmx) htmx.ajax("GET", runs.dataset.url, {target: "#runs-body", swap: "innerHTML"});
    if (job.updated_at) document.getElementById("job-updated").textContent = job.updated_at.replace("T", " ").slice(0, 19);
    const outputs = document.getElementById("outputs");
    const entries = Object.entries(job.outputs || {});
    if (entries.length) {
      outputs.replaceChildren(...entries.map(([k, v]) => {
        const row = el("tr"); row.append(el("th", {}, k), el("td", {}, typeof v === "string" ? v : JSON.stringify(v)));
        return row;
      }));
    }
  }

  function jobDetail() {
    const job = document.getElementById("job");
    if (!job) return;
    live(job.dataset.events, {status: onStatus, audit: onAudit, point: onPoint});
    const log = document.getElementById("log");
    live(job.dataset.logs, {
      run: (run) => {
        log.textContent = "";
        document.getElementById("log-run").textContent = "run " + run.id + " (attempt " + run.attempt + ")";
        document.getElementById("log-state").textContent = "";
      },
      line: (text) => {
        const follow = log.scrollTop + log.clientHeight >= log.scrollHeight - 8;
        log.append(document.createTextNode(text));
        if (log.textContent.length > MAX_LOG_CHARS) log.textContent = log.textContent.slice(-MAX_LOG_CHARS / 2);
        window.owLines.push([Date.now(), text]);
        if (window.owLines.length > 10000) window.owLines.splice(0, 5000);
        if (follow) log.scrollTop = log.scrollHeight;
      },
      run_ended: () => { document.getElementById("log-state").textContent = "(ended)"; },
    });
  }

  document.addEventListener("DOMContentLoaded", () => { jobList(); jobDetail(); });
})();
