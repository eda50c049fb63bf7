// asyncflow-hpc dashboard: polls /api/state once a second and draws it. Every value from the
// server is put in with textContent (never as HTML).
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  const fmt = (n) => (n == null ? "–" : Number(n).toLocaleString("en-US"));
  const PALETTE = ["#4c78a8", "#f58518", "#54a24b", "#b279a2", "#72b7b2", "#eeca3b",
                   "#9d755d", "#ff9da6", "#bab0ac", "#79706e"];
  let rateChart = null, nodeChart = null, nodeNames = [];

  function dur(s) {
    if (s == null) return "–";
    if (s < 1) return (s * 1000).toFixed(s < 0.01 ? 2 : 0) + " ms";
    s = Math.round(s);
    const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
    return (h ? h + ":" + String(m).padStart(2, "0") : m) + ":" + String(r).padStart(2, "0");
  }

  function setCount(id, n) { const el = $(id); el.textContent = fmt(n); el.dataset.value = n; }

  function rows(tbody, data, cells) {
    const body = $(tbody).querySelector("tbody");
    body.replaceChildren(...data.map((row) => {
      const tr = document.createElement("tr");
      for (const c of cells(row)) {
        const td = document.createElement("td");
        if (c instanceof Node) td.appendChild(c); else td.textContent = c;
        tr.appendChild(td);
      }
      return tr;
    }));
  }

  function mini(done, total) {
    const span = document.createElement("span");
    span.className = "mini";
    span.style.width = (total ? Math.round(80 * done / total) : 0) + "px";
    return span;
  }

  function groups(id, data) {
    const most = Math.max(1, ...data.map((r) => r[1] + r[2] + r[3] + r[4]));
    rows(id, data, (r) => [r[0], fmt(r[1]), fmt(r[2]), fmt(r[3]), dur(r[5]), mini(r[1] + r[2], most)]);
  }

  function stream(s, names) {
    const canvas = $("stream");
    const width = canvas.clientWidth || 800;
    const nodes = Object.keys(s.lanes).sort();
    const lanes = nodes.reduce((a, n) => a + s.lanes[n], 0) || 1;
    const laneH = Math.max(3, Math.min(18, Math.floor(200 / lanes)));
    canvas.width = width;
    canvas.height = Math.max(60, lanes * laneH + 20);
    const ctx = canvas.getContext("2d");
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    const first = {};
    let y = 0;
    for (const n of nodes) { first[n] = y; y += s.lanes[n]; }
    const x = (t) => 60 + (width - 70) * t / s.seconds;
    ctx.font = "11px sans-serif";
    ctx.fillStyle = "#666";
    for (const n of nodes) ctx.fillText(n, 2, (first[n] + 0.8) * laneH + 10);
    for (const [node, lane, t0, t1, fn, failed] of s.tasks) {
      const top = (first[node] + lane) * laneH + 10;
      ctx.fillStyle = failed ? "#e53e3e" : PALETTE[(fn >= 0 ? fn : 9) % PALETTE.length];
      ctx.fillRect(x(t0), top, Math.max(1, x(t1) - x(t0)), laneH - 1);
    }
    canvas.dataset.tasks = s.tasks.length;
  }

  function charts(st) {
    if (typeof uPlot === "undefined") return;
    const w = Math.max(300, $("chart-rate").clientWidth - 10);
    const rate = [st.throughput.map((p) => p[0]), st.throughput.map((p) => p[1])];
    if (!rateChart) {
      rateChart = new uPlot({ width: w, height: 180, series: [{}, { label: "tasks/s", stroke: "#2f855a",
                              fill: "#48bb7833" }] }, rate, $("chart-rate"));
    } else rateChart.setData(rate);
    const names = Object.keys(st.nodes).sort();
    if (!names.length) return;
    const base = st.nodes[names[0]].map((p) => p[0]);
    const data = [base];
    const series = [{}];
    for (const n of names) {
      const pts = st.nodes[n];
      data.push(base.map((_, i) => (pts[i] ? pts[i][1] : null)));
      data.push(base.map((_, i) => (pts[i] ? pts[i][2] : null)));
      series.push({ label: n + " cpu", stroke: "#4c78a8" }, { label: n + " mem", stroke: "#f58518" });
    }
    if (!nodeChart || names.join() !== nodeNames.join()) {
      if (nodeChart) nodeChart.destroy();
      $("chart-nodes").replaceChildren();
      nodeNames = names;
      nodeChart = new uPlot({ width: w, height: 180, series, scales: { y: { range: [0, 100] } } },
                            data, $("chart-nodes"));
    } else nodeChart.setData(data);
  }

  function render(st) {
    const t = st.tasks;
    $("session").textContent = (st.session.id || "") + (st.session.host ? " on " + st.session.host : "")
      + (st.session.backend ? " (" + st.session.backend + ")" : "");
    const status = $("status");
    status.textContent = st.live ? "running" : "finished";
    status.className = "badge " + (st.live ? "live" : "ended");
    document.body.dataset.live = st.live ? "1" : "0";
    $("elapsed").textContent = "elapsed " + dur(st.elapsed);
    $("updated").textContent = "updated " + new Date().toLocaleTimeString();
    for (const k of ["done", "running", "failed", "cancelled", "pending"]) setCount("n-" + k, t[k]);
    setCount("n-blocks", st.blocks.done);
    $("rate").textContent = st.rate.toFixed(1);
    $("eta").textContent = st.live ? dur(st.eta) : "–";
    const total = t.done + t.failed + t.cancelled + t.running + t.pending;
    $("bar-done").style.width = (total ? 100 * t.done / total : 0) + "%";
    $("bar-failed").style.width = (total ? 100 * t.failed / total : 0) + "%";
    groups("functions", st.functions);
    groups("workflows", st.workflows);
    $("running-count").textContent = "(" + fmt(st.running.count) + " over 1 s)";
    rows("running", st.running.oldest, (r) => [r[0], r[1], r[2] || "–", dur(r[3])]);
    rows("pilots", st.backends, (b) => [b.name, b.type || "", b.state || (st.live ? "active" : "closed"),
      b.nodes == null ? "–" : fmt(b.nodes), b.walltime_left_s == null ? "–" : dur(b.walltime_left_s)]);
    $("failed-total").textContent = "(" + fmt(st.failed_total) + ", newest first)";
    $("failures").replaceChildren(...st.failures.map((f) => {
      const div = document.createElement("div");
      div.className = "failure";
      const head = document.createElement("div");
      head.textContent = f.task + "  " + f.name + (f.workflow ? "  [" + f.workflow + "]" : "")
        + "  " + (f.error_type || "");
      const pre = document.createElement("pre");
      pre.textContent = f.error;
      div.append(head, pre);
      return div;
    }));
    stream(st.stream, st.functions.map((r) => r[0]));
    charts(st);
  }

  async function tick() {
    try {
      const resp = await fetch("api/state", { cache: "no-store", credentials: "same-origin" });
      if (resp.ok) render(await resp.json());
      else $("updated").textContent = "server answered " + resp.status;
    } catch (e) {
      $("updated").textContent = "server not answering (the campaign may have ended)";
    }
  }
  tick();
  setInterval(tick, 1000);
})();
