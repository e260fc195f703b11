// recstack segment dashboard: reads the analyst routes (GET /segments, GET /users/{id}/profile) with the key the
// reader enters (kept in this tab's sessionStorage only) and draws them with the vendored Chart.js.
// No data is ever written as HTML: every value goes through textContent.
"use strict";

(function () {
  const KEY = "recstack.dashboard.key";
  const $ = (id) => document.getElementById(id);
  const charts = {};
  let segments = [];

  function setStatus(text, error) {
    const node = $("status");
    node.textContent = text;
    node.classList.toggle("error", Boolean(error));
  }

  function show(id, visible) {
    $(id).hidden = !visible;
  }

  async function api(path) {
    const key = sessionStorage.getItem(KEY);
    const response = await fetch(path, { headers: { Authorization: "Bearer " + key, Accept: "application/json" } });
    let body = null;
    try {
      body = await response.json();
    } catch (e) {
      body = null;
    }
    return { status: response.status, body: body };
  }

  function chartsAvailable() {
    return typeof window.Chart === "function";
  }

  function draw(id, config, points) {
    if (charts[id]) {
      charts[id].destroy();
      delete charts[id];
    }
    const canvas = $(id);
    canvas.dataset.points = String(points);
    canvas.parentElement.hidden = points === 0;
    if (!chartsAvailable() || points === 0) return;
    config.options = Object.assign({ animation: false, responsive: true, maintainAspectRatio: false }, config.options);
    charts[id] = new window.Chart(canvas, config);
    canvas.dataset.rendered = "true";
  }

  const PALETTE = ["#2f5bea", "#e4572e", "#17a398", "#f3a712", "#7b2cbf", "#29335c", "#db2b39", "#669bbc"];

  function drawSizes() {
    const withSizes = segments.filter((s) => s.sizes.length > 0);
    const labels = [...new Set(withSizes.flatMap((s) => s.sizes.map((p) => p[0])))].sort();
    const datasets = withSizes.map((s, i) => {
      const bySize = new Map(s.sizes.map((p) => [p[0], p[1]]));
      return {
        label: s.name,
        data: labels.map((t) => (bySize.has(t) ? bySize.get(t) : null)),
        borderColor: PALETTE[i % PALETTE.length],
        backgroundColor: PALETTE[i % PALETTE.length],
        spanGaps: true,
      };
    });
    const points = datasets.reduce((n, d) => n + d.data.filter((v) => v !== null).length, 0);
    show("sizes-empty", points === 0);
    draw("sizes-chart", {
      type: "line",
      data: { labels: labels, datasets: datasets },
      options: { scales: { y: { beginAtZero: true, title: { display: true, text: "members" } } } },
    }, points);
  }

  function drawOverlap() {
    const named = segments.filter((s) => s.last_run_size !== null && s.last_run_size !== undefined);
    const names = named.map((s) => s.name);
    const cells = [];
    for (const row of named) {
      for (const column of names) {
        const common = row.name === column ? row.last_run_size : (row.overlap[column] || 0);
        const share = row.last_run_size > 0 ? common / row.last_run_size : 0;
        cells.push({ x: column, y: row.name, v: share, n: common });
      }
    }
    const points = named.some((s) => s.last_run_size > 0) ? cells.length : 0;
    show("overlap-empty", points === 0);
    draw("overlap-chart", {
      type: "matrix",
      data: {
        datasets: [{
          label: "overlap",
          data: cells,
          backgroundColor: (ctx) => "rgba(47, 91, 234, " + (0.08 + 0.92 * (ctx.raw ? ctx.raw.v : 0)).toFixed(3) + ")",
          borderColor: "#ffffff",
          borderWidth: 1,
          width: ({ chart }) => (chart.chartArea || {}).width / Math.max(names.length, 1) - 1,
          height: ({ chart }) => (chart.chartArea || {}).height / Math.max(names.length, 1) - 1,
        }],
      },
      options: {
        plugins: {
          legend: { display: false },
          tooltip: {
            callbacks: {
              title: () => "",
              label: (ctx) => ctx.raw.y + " in " + ctx.raw.x + ": " + ctx.raw.n + " (" + Math.round(100 * ctx.raw.v) + "%)",
            },
          },
        },
        scales: {
          x: { type: "category", labels: names, offset: true, grid: { display: false } },
          y: { type: "category", labels: names, offset: true, reverse: true, grid: { display: false } },
        },
      },
    }, points);
  }

  function drawDetail() {
    const name = $("segment-pick").value;
    const segment = segments.find((s) => s.name === name);
    const items = segment ? segment.top_items : [];
    const categories = segment ? segment.top_categories : [];
    show("items-empty", Boolean(segment) && items.length === 0);
    show("categories-empty", Boolean(segment) && categories.length === 0);
    draw("items-chart", {
      type: "bar",
      data: { labels: items.map((i) => i.title), datasets: [{ label: "events", data: items.map((i) => i.n), backgroundColor: "#2f5bea" }] },
      options: { indexAxis: "y", plugins: { legend: { display: false } } },
    }, items.length);
    draw("categories-chart", {
      type: "bar",
      data: { labels: categories.map((c) => c.category), datasets: [{ label: "events", data: categories.map((c) => c.n), backgroundColor: "#17a398" }] },
      options: { indexAxis: "y", plugins: { legend: { display: false } } },
    }, categories.length);
  }

  function fillTable() {
    const rows = $("segments-rows");
    rows.replaceChildren();
    for (const s of segments) {
      const tr = document.createElement("tr");
      tr.dataset.segment = s.name;
      const pick = document.createElement("button");
      pick.type = "button";
      pick.textContent = s.name;
      pick.addEventListener("click", () => {
        $("segment-pick").value = s.name;
        drawDetail();
      });
      const cells = [pick, String(s.size), s.last_run || "never", s.source || "", JSON.stringify(s.rule)];
      cells.forEach((value, i) => {
        const td = document.createElement(i === 0 ? "th" : "td");
        if (i === 0) td.scope = "row";
        if (value instanceof Node) td.append(value);
        else if (i === 4) {
          const code = document.createElement("code");
          code.textContent = value;
          td.append(code);
        } else td.textContent = value;
        tr.append(td);
      });
      rows.append(tr);
    }
    const pick = $("segment-pick");
    const previous = pick.value;
    pick.replaceChildren(...segments.map((s) => new Option(s.name, s.name)));
    const best = segments.find((s) => s.name === previous) || segments.find((s) => s.top_items.length) || segments[0];
    if (best) pick.value = best.name;
    show("segments-table", segments.length > 0);
    show("segments-empty", segments.length === 0);
  }

  async function load() {
    if (!sessionStorage.getItem(KEY)) {
      document.body.dataset.state = "needs-key";
      setStatus("Enter an API key to load the segments.");
      return;
    }
    setStatus("Loading segments...");
    const answer = await api("/segments");
    if (answer.status !== 200) {
      document.body.dataset.state = "error";
      const why = answer.body && answer.body.error ? answer.body.error : "HTTP " + answer.status;
      setStatus("Could not load the segments: " + why, true);
      return;
    }
    segments = answer.body.segments;
    fillTable();
    show("library-missing", !chartsAvailable());
    drawSizes();
    drawOverlap();
    drawDetail();
    setStatus(segments.length + " segments loaded.");
    document.body.dataset.state = "loaded";
  }

  async function lookup(event) {
    event.preventDefault();
    const id = $("lookup-id").value.trim();
    const status = $("lookup-status");
    show("lookup-result", false);
    if (!id) return;
    status.textContent = "Looking up...";
    const answer = await api("/users/" + encodeURIComponent(id) + "/profile");
    if (answer.status === 404) {
      const member = await api("/users/" + encodeURIComponent(id) + "/segments");
      status.textContent = member.status === 200
        ? "No profile built for this user yet; segments: " + (member.body.segments.join(", ") || "none")
        : "No profile or segments for this user (unknown, erased, or not built yet).";
      document.body.dataset.lookup = "missing";
      return;
    }
    if (answer.status !== 200) {
      status.textContent = "Lookup failed: " + (answer.body && answer.body.error ? answer.body.error : "HTTP " + answer.status);
      document.body.dataset.lookup = "error";
      return;
    }
    const body = answer.body;
    $("lookup-segments").textContent = body.segments.length ? body.segments.join(", ") : "none";
    $("lookup-subject").textContent = body.subject;
    const rows = $("lookup-rows");
    rows.replaceChildren();
    for (const [field, value] of Object.entries(body.profile)) {
      const tr = document.createElement("tr");
      const th = document.createElement("th");
      th.scope = "row";
      th.textContent = field;
      const td = document.createElement("td");
      td.textContent = typeof value === "string" ? value : JSON.stringify(value);
      tr.append(th, td);
      rows.append(tr);
    }
    status.textContent = "";
    show("lookup-result", true);
    document.body.dataset.lookup = "found";
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("key-form").addEventListener("submit", (event) => {
      event.preventDefault();
      sessionStorage.setItem(KEY, $("api-key").value.trim());
      $("api-key").value = "";
      load();
    });
    $("segment-pick").addEventListener("change", drawDetail);
    $("lookup-form").addEventListener("submit", lookup);
    load();
  });
})();
