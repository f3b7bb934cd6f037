// agentrl run viewer: curves from metrics.jsonl and a paged episode browser.
// Served mode fetches /api/...; the exported file embeds the same answers in #agentrl-data.
// Model text only ever reaches the page through textContent / createTextNode, never innerHTML.
"use strict";

(function () {
  const KINDS = ["prompt", "sampled", "observation", "masked"];
  const KIND_LABELS = ["prompt", "sampled", "tool output", "masked"];
  const PALETTE = ["#2f6fde", "#e8590c", "#2b8a3e", "#c2255c", "#7048e8", "#0b7285", "#e67700",
    "#5c940d", "#862e9c", "#495057"];
  const DASHES = ["", "6 3", "2 3", "9 3 2 3", "1 2", "12 4"];
  const PAGE = 50;
  const BULK_SPAN = 4000; // tokens: longer spans are drawn as one text run (no per-token hover)

  const embedded = document.getElementById("agentrl-data");
  const DATA = embedded ? JSON.parse(embedded.textContent) : null;

  const state = { runs: [], run: 0, offset: 0, total: 0, selected: null, colour: "kind" };

  // ---- small DOM helpers ------------------------------------------------------------------------
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") node.className = v;
      else if (k === "text") node.textContent = v;
      else node.setAttribute(k, v);
    }
    for (const c of children) {
      if (c === null || c === undefined) continue;
      node.appendChild(typeof c === "string" ? document.createTextNode(c) : c);
    }
    return node;
  }
  function svg(tag, attrs) {
    const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "text") node.textContent = v;
      else node.setAttribute(k, v);
    }
    return node;
  }
  function fmt(v) {
    if (v === null || v === undefined) return "–";
    if (typeof v !== "number") return String(v);
    if (!isFinite(v)) return String(v);
    if (Number.isInteger(v) && Math.abs(v) < 1e6) return String(v);
    const a = Math.abs(v);
    if (a !== 0 && (a >= 1e5 || a < 1e-3)) return v.toExponential(2);
    return String(Number(v.toPrecision(4)));
  }
  function setStatus(text, error) {
    const s = document.getElementById("status");
    s.textContent = text;
    s.className = error ? "status error" : "status";
  }

  // ---- data access: the server's API, or the same answers from the embedded export -----------
  async function api(path, params) {
    if (DATA) return local(path, params || {});
    const url = new URL("api/" + path, document.baseURI);
    for (const [k, v] of Object.entries(params || {})) {
      if (v !== "" && v !== null && v !== undefined) url.searchParams.set(k, v);
    }
    const r = await fetch(url);
    if (!r.ok) {
      let detail = r.statusText;
      try { detail = (await r.json()).detail || detail; } catch (e) { /* not JSON */ }
      throw new Error(path + ": " + detail);
    }
    return r.json();
  }
  function local(path, p) {
    const run = Number(p.run || 0);
    if (path === "runs") return DATA.runs;
    if (path === "config") return DATA.configs[run];
    if (path === "eval") return DATA.evals[run];
    if (path === "metrics") return DATA.metrics;
    if (path === "episodes") {
      const all = DATA.episodes[run].summaries;
      const num = (x) => (x === "" || x === undefined || x === null ? null : Number(x));
      const step = num(p.step), lo = num(p.min_reward), hi = num(p.max_reward);
      const scope = all.filter((e) => step === null || e.step === step);
      const items = scope.filter((e) =>
        (!p.stop_reason || e.stop_reason === p.stop_reason) &&
        (!p.env || e.env_id === p.env) &&
        (lo === null || (e.reward !== null && e.reward >= lo)) &&
        (hi === null || (e.reward !== null && e.reward <= hi)) &&
        (!p.correct || String(e.correct) === p.correct));
      const offset = Number(p.offset || 0), limit = Number(p.limit || PAGE);
      return {
        total: items.length, offset, limit, items: items.slice(offset, offset + limit),
        facets: {
          stop_reasons: [...new Set(scope.map((e) => e.stop_reason))].sort(),
          envs: [...new Set(scope.map((e) => e.env_id))].sort(),
        },
      };
    }
    const m = /^episode\/(-?\d+)\/(\d+)$/.exec(path);
    if (m) {
      const ep = DATA.episodes[run].full[m[1] + "/" + m[2]];
      if (!ep) throw new Error("episode " + m[1] + "/" + m[2] + " is not in this export");
      return ep;
    }
    throw new Error("unknown path " + path);
  }

  // ---- config ------------------------------------------------------------------------------------
  function tree(value, key, depth) {
    depth = depth || 0;
    if (value !== null && typeof value === "object") {
      const entries = Array.isArray(value) ? value.map((v, i) => [String(i), v]) : Object.entries(value);
      const d = el("details", { open: depth < 3 ? "" : null });
      d.appendChild(el("summary", { text: (key === null ? "config" : key) +
        (Array.isArray(value) ? " [" + value.length + "]" : " {" + entries.length + "}") }));
      for (const [k, v] of entries) d.appendChild(tree(v, k, depth + 1));
      return d;
    }
    return el("div", { class: "kv" }, el("span", { class: "k", text: key + ": " }), JSON.stringify(value));
  }
  function renderConfig(configs, evals) {
    const box = document.getElementById("config");
    box.textContent = "";
    state.runs.forEach((run, i) => {
      const cfg = configs[i] || {};
      const d = el("details", { class: "config", open: i === 0 ? "" : null });
      d.appendChild(el("summary", { text: run.name + (cfg.text === null ? " (no config.yaml)" : "") }));
      if (cfg.data && typeof cfg.data === "object") {
        const t = el("div", { class: "tree" }, tree(cfg.data, null));
        d.appendChild(t);
        const raw = el("details", {}, el("summary", { text: "as YAML" }), el("pre", { class: "yaml", text: cfg.text }));
        d.appendChild(raw);
      } else if (cfg.text) {
        d.appendChild(el("pre", { class: "yaml", text: cfg.text }));
      }
      const ev = evals[i];
      if (ev && typeof ev === "object") d.appendChild(evalTable(ev));
      box.appendChild(d);
    });
  }
  function evalTable(ev) {
    const cols = Object.keys(ev).filter((k) => ev[k] && typeof ev[k] === "object");
    const keys = [...new Set(cols.flatMap((c) => Object.keys(ev[c])))].sort();
    const t = el("table", { class: "evals" });
    t.appendChild(el("tr", {}, el("th", { text: "eval" }), ...cols.map((c) => el("th", { text: c }))));
    for (const k of keys) {
      t.appendChild(el("tr", {}, el("td", { text: k }), ...cols.map((c) => el("td", { text: fmt(ev[c][k]) }))));
    }
    return t;
  }

  // ---- curves ------------------------------------------------------------------------------------
  // Tick labels carry as many decimals as the tick spacing needs (0.99995 / 1.00000 / 1.00005, not 1 / 1).
  function fmtTick(v, ticks) {
    if (v === 0) return "0";
    const step = ticks.length > 1 ? Math.abs(ticks[1] - ticks[0]) : Math.abs(v) || 1;
    const big = Math.max(...ticks.map(Math.abs));
    if (big >= 1e5 || (big > 0 && big < 1e-3) || step < 1e-6) return v.toExponential(Math.max(0, Math.min(6,
      Math.ceil(Math.log10(big / step))))).replace("e+", "e");
    const decimals = Math.max(0, Math.min(8, -Math.floor(Math.log10(step) + 1e-9)));
    return v.toFixed(decimals);
  }
  function niceTicks(lo, hi, n) {
    const span = hi - lo;
    const raw = span / Math.max(n, 1);
    const mag = Math.pow(10, Math.floor(Math.log10(raw)));
    const norm = raw / mag;
    const step = (norm < 1.5 ? 1 : norm < 3 ? 2 : norm < 7 ? 5 : 10) * mag;
    const ticks = [];
    for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) ticks.push(Number(v.toPrecision(12)));
    return ticks;
  }
  function seriesStyle(runIdx, nameIdx, nNames, nRuns) {
    if (nRuns > 1) return { color: PALETTE[runIdx % PALETTE.length], dash: DASHES[nameIdx % DASHES.length] };
    if (nNames > PALETTE.length) {
      return { color: "hsl(" + Math.round(230 - 220 * nameIdx / Math.max(nNames - 1, 1)) + ",70%,45%)", dash: "" };
    }
    return { color: PALETTE[nameIdx % PALETTE.length], dash: "" };
  }
  function renderCurves(metrics) {
    const box = document.getElementById("panels");
    box.textContent = "";
    if (!metrics.panels.length) {
      box.appendChild(el("p", { class: "empty", text: "No metrics.jsonl lines yet." }));
      return;
    }
    for (const panel of metrics.panels) {
      for (const part of splitByScale(panel, metrics.runs)) box.appendChild(drawPanel(part, metrics.runs));
    }
  }
  // Series whose magnitudes differ by more than SCALE_GAP (tokens/s next to seconds) share no axis:
  // the panel is split so that each part's series have comparable ranges.
  const SCALE_GAP = 20;
  function splitByScale(panel, runs) {
    const mag = {};
    for (const name of panel.series) {
      let m = 0;
      for (const run of runs) for (const y of run.series[name] || []) if (y !== null) m = Math.max(m, Math.abs(y));
      mag[name] = m;
    }
    const order = [...panel.series].sort((a, b) => mag[b] - mag[a]);
    const groups = [];
    for (const name of order) {
      const g = groups[groups.length - 1];
      if (g && (mag[name] === 0 || mag[g[0]] / mag[name] <= SCALE_GAP)) g.push(name);
      else groups.push([name]);
    }
    if (groups.length <= 1) return [panel];
    return groups.map((g, i) => ({
      key: panel.key, title: panel.title + " (" + (i + 1) + "/" + groups.length + ")",
      series: panel.series.filter((n) => g.includes(n)),
    }));
  }
  function drawPanel(panel, runs) {
    const card = el("div", { class: "panel", "data-panel": panel.key });
    card.appendChild(el("h3", { text: panel.title }));
    const lines = [];
    runs.forEach((run, r) => {
      panel.series.forEach((name, s) => {
        const ys = run.series[name];
        if (!ys) return;
        const style = seriesStyle(r, s, panel.series.length, runs.length);
        const label = runs.length > 1 ? run.name + " · " + name : name;
        lines.push({ label, name, xs: run.steps, ys, hidden: false, ...style });
      });
    });
    const W = 420, H = 200, L = 52, R = 10, T = 8, B = 22;
    const plot = svg("svg", { viewBox: "0 0 " + W + " " + H, role: "img", "aria-label": panel.title });
    card.appendChild(plot);
    const legend = el("div", { class: "legend" });
    card.appendChild(legend);

    function draw() {
      plot.textContent = "";
      const shown = lines.filter((l) => !l.hidden);
      let x0 = Infinity, x1 = -Infinity, y0 = Infinity, y1 = -Infinity;
      for (const l of shown) {
        l.ys.forEach((y, i) => {
          if (y === null) return;
          x0 = Math.min(x0, l.xs[i]); x1 = Math.max(x1, l.xs[i]);
          y0 = Math.min(y0, y); y1 = Math.max(y1, y);
        });
      }
      if (!isFinite(x0)) {
        plot.appendChild(svg("text", { x: W / 2, y: H / 2, "text-anchor": "middle", class: "axis", text: "no finite values" }));
        return null;
      }
      if (x1 === x0) { x0 -= 1; x1 += 1; }
      if (y1 === y0) { const d = Math.abs(y0) * 0.1 || 1; y0 -= d; y1 += d; }
      const pad = (y1 - y0) * 0.06; y0 -= pad; y1 += pad;
      const sx = (x) => L + (x - x0) / (x1 - x0) * (W - L - R);
      const sy = (y) => T + (1 - (y - y0) / (y1 - y0)) * (H - T - B);
      const axis = svg("g", { class: "axis" });
      const yTicks = niceTicks(y0, y1, 4);
      for (const t of yTicks) {
        axis.appendChild(svg("line", { class: "grid", x1: L, x2: W - R, y1: sy(t), y2: sy(t) }));
        axis.appendChild(svg("text", { x: L - 4, y: sy(t) + 3, "text-anchor": "end", text: fmtTick(t, yTicks) }));
      }
      for (const t of niceTicks(x0, x1, 6)) {
        if (!Number.isInteger(t)) continue;
        axis.appendChild(svg("line", { class: "grid", x1: sx(t), x2: sx(t), y1: T, y2: H - B }));
        axis.appendChild(svg("text", { x: sx(t), y: H - B + 13, "text-anchor": "middle", text: String(t) }));
      }
      plot.appendChild(axis);
      for (const l of shown) {
        let d = "", open = false;
        const g = svg("g", {});
        // A metric logged on a minority of steps (eval every N steps) is drawn as points joined across
        // the steps without it; a mostly dense metric keeps its gaps (NaN, inf, missing) visible.
        const present = l.ys.filter((y) => y !== null).length;
        const sparse = present < l.ys.length / 2;
        l.ys.forEach((y, i) => {
          if (y === null) { if (!sparse) open = false; return; }
          const px = sx(l.xs[i]).toFixed(1), py = sy(y).toFixed(1);
          d += (open ? "L" : "M") + px + " " + py;
          const prev = i > 0 ? l.ys[i - 1] : null, next = i + 1 < l.ys.length ? l.ys[i + 1] : null;
          if (sparse || (prev === null && next === null)) {
            g.appendChild(svg("circle", { cx: px, cy: py, r: 2.4, fill: l.color }));
          }
          open = true;
        });
        const path = svg("path", { class: "line", d, stroke: l.color, "data-series": l.label });
        if (l.dash) path.setAttribute("stroke-dasharray", l.dash);
        g.insertBefore(path, g.firstChild);
        plot.appendChild(g);
      }
      const cursor = svg("line", { class: "cursor", y1: T, y2: H - B, visibility: "hidden" });
      plot.appendChild(cursor);
      return { sx, x0, x1, cursor, L, R, W };
    }
    let geo = draw();

    lines.forEach((l) => {
      const sw = svg("svg", { viewBox: "0 0 18 8" });
      const ln = svg("line", { x1: 0, x2: 18, y1: 4, y2: 4, stroke: l.color, "stroke-width": 2 });
      if (l.dash) ln.setAttribute("stroke-dasharray", l.dash);
      sw.appendChild(ln);
      const item = el("span", { class: "item", title: "click to hide or show" }, sw, l.label);
      item.addEventListener("click", () => {
        l.hidden = !l.hidden;
        item.classList.toggle("off", l.hidden);
        geo = draw();
      });
      legend.appendChild(item);
    });

    plot.addEventListener("mousemove", (ev) => {
      if (!geo) return;
      const box = plot.getBoundingClientRect();
      const x = (ev.clientX - box.left) / box.width * geo.W;
      const step = geo.x0 + (x - geo.L) / (geo.W - geo.L - geo.R) * (geo.x1 - geo.x0);
      const rows = [];
      let best = null;
      for (const l of lines) {
        if (l.hidden) continue;
        let bi = -1, bd = Infinity;
        l.xs.forEach((s, i) => { if (l.ys[i] !== null && Math.abs(s - step) < bd) { bd = Math.abs(s - step); bi = i; } });
        if (bi < 0) continue;
        if (best === null || Math.abs(l.xs[bi] - step) < Math.abs(best - step)) best = l.xs[bi];
        rows.push([l, bi]);
      }
      if (best === null) return;
      const lines_ = ["step " + best];
      for (const [l, i] of rows) if (l.xs[i] === best) lines_.push(l.label + ": " + fmt(l.ys[i]));
      geo.cursor.setAttribute("x1", geo.sx(best)); geo.cursor.setAttribute("x2", geo.sx(best));
      geo.cursor.setAttribute("visibility", "visible");
      showTip(lines_.slice(0, 16).join("\n") + (lines_.length > 16 ? "\n…" : ""), ev.clientX, ev.clientY);
    });
    plot.addEventListener("mouseleave", () => {
      if (geo) geo.cursor.setAttribute("visibility", "hidden");
      hideTip();
    });
    return card;
  }

  // ---- tooltip -----------------------------------------------------------------------------------
  function showTip(text, x, y) {
    const t = document.getElementById("tooltip");
    t.textContent = text;
    t.hidden = false;
    const w = t.offsetWidth, h = t.offsetHeight;
    t.style.left = Math.min(x + 14, window.innerWidth - w - 8) + "px";
    t.style.top = (y + 16 + h > window.innerHeight ? y - h - 10 : y + 16) + "px";
  }
  function hideTip() { document.getElementById("tooltip").hidden = true; }

  // ---- episode list ------------------------------------------------------------------------------
  const form = document.getElementById("filters");
  function filterParams() {
    const p = { run: state.run, offset: state.offset, limit: PAGE };
    for (const name of ["step", "stop_reason", "env", "min_reward", "max_reward", "correct"]) {
      const v = form.elements[name].value;
      if (v !== "") p[name] = v;
    }
    return p;
  }
  function fillSelect(select, values, anyLabel) {
    const keep = select.value;
    select.textContent = "";
    select.appendChild(el("option", { value: "", text: anyLabel }));
    for (const v of values) select.appendChild(el("option", { value: String(v), text: v === "" ? "(none)" : String(v) }));
    if ([...select.options].some((o) => o.value === keep)) select.value = keep;
  }
  let listToken = 0;
  async function loadList() {
    const token = ++listToken;
    setStatus("loading episodes…");
    let page;
    try {
      page = await api("episodes", filterParams());
    } catch (e) {
      setStatus(String(e.message || e), true);
      return;
    }
    if (token !== listToken) return;
    state.total = page.total;
    fillSelect(form.elements.stop_reason, page.facets.stop_reasons, "any");
    fillSelect(form.elements.env, page.facets.envs, "any");
    const body = document.querySelector("#episode-table tbody");
    body.textContent = "";
    for (const e of page.items) {
      const ok = e.correct === true ? "✓" : e.correct === false ? "✗" : "";
      const tr = el("tr", { "data-step": e.step, "data-index": e.index },
        el("td", { class: "num", text: String(e.step) }),
        el("td", { class: "num", text: String(e.index) }),
        el("td", { class: "num", text: fmt(e.reward) }),
        el("td", { text: ok }),
        el("td", { class: "stop", text: e.stop_reason }),
        el("td", { class: "num", text: String(e.num_turns) }),
        el("td", { class: "num", text: String(e.num_tokens) }),
        el("td", { class: "env", text: e.env_id, title: e.env_id }),
        el("td", { text: e.task_id, title: e.task_id }));
      if (state.selected && state.selected[0] === e.step && state.selected[1] === e.index) tr.className = "selected";
      tr.addEventListener("click", () => openEpisode(e.step, e.index, tr));
      body.appendChild(tr);
    }
    if (!page.items.length) {
      body.appendChild(el("tr", {}, el("td", { colspan: 9, class: "empty", text: "no episodes match" })));
    }
    const a = page.total ? page.offset + 1 : 0, b = page.offset + page.items.length;
    document.getElementById("page-info").textContent = a + "–" + b + " of " + page.total.toLocaleString("en");
    document.getElementById("prev").disabled = page.offset === 0;
    document.getElementById("next").disabled = b >= page.total;
    setStatus("");
  }
  function fillSteps() {
    const steps = state.runs[state.run] ? state.runs[state.run].steps : [];
    fillSelect(form.elements.step, steps, "all");
  }
  form.addEventListener("change", (ev) => {
    if (ev.target.name === "run") { state.run = Number(ev.target.value); fillSteps(); }
    state.offset = 0;
    loadList();
  });
  form.addEventListener("submit", (ev) => { ev.preventDefault(); state.offset = 0; loadList(); });
  // j / k (or arrow keys) walk the list, as in a mail reader.
  document.addEventListener("keydown", (ev) => {
    if (ev.target.closest && ev.target.closest("input, select, textarea")) return;
    const down = ev.key === "j" || ev.key === "ArrowDown", up = ev.key === "k" || ev.key === "ArrowUp";
    if (!down && !up) return;
    const rowsNow = [...document.querySelectorAll("#episode-table tbody tr[data-step]")];
    if (!rowsNow.length) return;
    const at = rowsNow.findIndex((r) => r.classList.contains("selected"));
    const next = rowsNow[Math.max(0, Math.min(rowsNow.length - 1, at < 0 ? 0 : at + (down ? 1 : -1)))];
    ev.preventDefault();
    next.scrollIntoView({ block: "nearest" });
    openEpisode(Number(next.dataset.step), Number(next.dataset.index), next);
  });
  document.getElementById("prev").addEventListener("click", () => { state.offset = Math.max(0, state.offset - PAGE); loadList(); });
  document.getElementById("next").addEventListener("click", () => { state.offset += PAGE; loadList(); });

  // ---- one episode -------------------------------------------------------------------------------
  async function openEpisode(step, index, row) {
    state.selected = [step, index];
    for (const r of document.querySelectorAll("#episode-table tr.selected")) r.className = "";
    if (row) row.className = "selected";
    const box = document.getElementById("episode");
    setStatus("loading episode…");
    let ep;
    try {
      ep = await api("episode/" + step + "/" + index, { run: state.run });
    } catch (e) {
      setStatus(String(e.message || e), true);
      return;
    }
    // Keys pressed quickly start several loads; an older answer arriving last must not replace the newer one.
    if (state.selected[0] !== step || state.selected[1] !== index) return;
    box.textContent = "";
    box.appendChild(renderEpisode(ep));
    history.replaceState(null, "", "#run=" + state.run + "&step=" + step + "&episode=" + index);
    box.dataset.step = step;
    box.dataset.index = index;
    setStatus("");
  }
  function badge(text, cls) { return el("span", { class: "badge" + (cls ? " " + cls : ""), text }); }
  function renderEpisode(ep) {
    const root = el("div", { class: "episode-view" });
    root.appendChild(el("h3", { text: "step " + ep.step + " · episode " + ep.index }));
    const stopCls = ep.stop_reason === "stop" ? "good" : ["error", "tool_error", "timeout", "aborted"].includes(ep.stop_reason) ? "bad" : "warn";
    const badges = el("div", {},
      badge("reward " + fmt(ep.reward), ep.reward > 0 ? "good" : null),
      ep.correct === null || ep.correct === undefined ? null : badge(ep.correct ? "correct" : "wrong", ep.correct ? "good" : "bad"),
      badge("stop: " + ep.stop_reason, stopCls),
      badge(ep.num_turns + " turns"),
      badge(ep.tokens.id.length + " tokens"),
      ep.env_id ? badge("env " + ep.env_id) : null,
      ep.task_id ? badge("task " + ep.task_id) : null,
      badge("group " + ep.group_id + " / sample " + ep.sample_id),
      ep.template_drift ? badge("template drift", "warn") : null);
    root.appendChild(badges);

    const counts = [0, 0, 0, 0];
    for (const k of ep.tokens.kind) if (k >= 0 && k < 4) counts[k] += 1;
    const kinds = el("div", { class: "kinds" });
    KINDS.forEach((k, i) => kinds.appendChild(el("span", { class: "swatch kind-" + k, text: KIND_LABELS[i] + " " + counts[i] })));
    const colour = el("select", { name: "colour", title: "background of sampled tokens" },
      el("option", { value: "kind", text: "colour by kind" }),
      el("option", { value: "logprob", text: "colour by behavior prob" }),
      ep.has_ratio ? el("option", { value: "ratio", text: "colour by learner ratio" }) : null);
    colour.value = state.colour === "ratio" && !ep.has_ratio ? "kind" : state.colour;
    kinds.appendChild(colour);
    root.appendChild(kinds);

    const meta = el("div", { class: "meta-grid" });
    const info = ep.info || {};
    for (const k of ["task", "answer"]) {
      if (info[k] !== undefined) meta.append(el("div", { class: "k", text: k }), el("div", { class: "v", text: typeof info[k] === "string" ? info[k] : JSON.stringify(info[k]) }));
    }
    if (ep.turn_rewards && ep.turn_rewards.length) meta.append(el("div", { class: "k", text: "turn rewards" }), el("div", { class: "v", text: ep.turn_rewards.map(fmt).join(", ") }));
    const timings = Object.entries(ep.timings || {});
    if (timings.length) meta.append(el("div", { class: "k", text: "timings" }), el("div", { class: "v", text: timings.map(([k, v]) => k + "=" + fmt(v)).join("  ") }));
    const rest = Object.keys(info).filter((k) => k !== "task" && k !== "answer");
    if (rest.length) {
      const other = {};
      for (const k of rest) other[k] = info[k];
      meta.append(el("div", { class: "k", text: "info" }), el("div", { class: "v", text: JSON.stringify(other) }));
    }
    root.appendChild(meta);

    if (ep.tool_calls && ep.tool_calls.length) {
      const t = el("table", { class: "tools" });
      t.appendChild(el("tr", {}, ...["#", "tool", "status", "time (s)", "truncated"].map((h) => el("th", { text: h }))));
      ep.tool_calls.forEach((c, i) => {
        const okStatus = ["Finished", "Success"].includes(c.status);
        t.appendChild(el("tr", {},
          el("td", { text: String(i + 1) }),
          el("td", { class: "name", text: c.name === undefined ? "python" : String(c.name),
            title: c.name === undefined ? null : String(c.name).slice(0, 500) }),
          el("td", {}, badge(String(c.status === undefined ? "?" : c.status), okStatus ? "good" : "bad")),
          el("td", { text: fmt(c.execution_time) }),
          el("td", { text: c.truncated ? "yes" : "" })));
      });
      root.appendChild(t);
    }

    const turns = el("div", { class: "turns" });
    const drawTurns = () => {
      turns.textContent = "";
      renderTurns(ep, turns, colour.value);
    };
    colour.addEventListener("change", () => { state.colour = colour.value; drawTurns(); });
    drawTurns();
    root.appendChild(turns);
    return root;
  }
  function heat(ep, i, mode) {
    const k = ep.tokens.kind[i];
    if (k !== 1 && k !== 3) return null;
    if (mode === "logprob") {
      const lp = ep.tokens.logprob[i];
      if (k !== 1 || lp === null) return null;
      const p = Math.exp(lp);
      return "hsla(" + Math.round(120 * p) + ",75%,50%," + (0.15 + 0.45 * (1 - p)).toFixed(2) + ")";
    }
    if (mode === "ratio") {
      const r = ep.tokens.ratio[i];
      if (r === null || r === undefined) return null;
      const d = Math.max(-1, Math.min(1, Math.log(r) / Math.log(2)));
      return d >= 0 ? "rgba(214,40,40," + (0.1 + 0.6 * d).toFixed(2) + ")" : "rgba(47,111,222," + (0.1 - 0.6 * d).toFixed(2) + ")";
    }
    return null;
  }
  function renderTurns(ep, container, mode) {
    const tk = ep.tokens, n = tk.id.length;
    let i = 0;
    while (i < n) {
      const turn = tk.turn[i];
      let j = i;
      while (j < n && tk.turn[j] === turn) j++;
      const block = el("div", { class: "turn", "data-turn": turn });
      const head = el("div", { class: "turn-head" },
        el("span", { text: turn === 0 ? "prompt" : "turn " + turn }),
        el("span", { text: (j - i) + " tokens" }));
      if (turn > 0 && ep.turn_rewards && ep.turn_rewards[turn - 1] !== undefined) head.appendChild(el("span", { text: "reward " + fmt(ep.turn_rewards[turn - 1]) }));
      block.appendChild(head);
      const body = el("div", { class: "turn-body" });
      let s = i;
      while (s < j) {
        const kind = tk.kind[s];
        let e = s;
        while (e < j && tk.kind[e] === kind) e++;
        const name = KINDS[kind] || "prompt";
        const span = el("span", { class: "span kind-" + name, "data-kind": name, "data-start": s, "data-end": e });
        if (e - s > BULK_SPAN) {
          span.appendChild(document.createTextNode(tk.text.slice(s, e).join("")));
          span.appendChild(el("span", { class: "bulk-note", text: " [" + (e - s) + " tokens shown as one run; hover is off for spans over " + BULK_SPAN + "]" }));
        } else {
          for (let t = s; t < e; t++) {
            const tok = el("span", { class: "tok", "data-i": t });
            tok.textContent = tk.text[t];
            if (/^<\|[^|]*\|>$/.test(tk.text[t])) tok.classList.add("special");
            const bg = mode !== "kind" ? heat(ep, t, mode) : null;
            if (bg) tok.style.background = bg;
            span.appendChild(tok);
          }
        }
        body.appendChild(span);
        s = e;
      }
      block.appendChild(body);
      container.appendChild(block);
      i = j;
    }
    container.onmouseover = (ev) => {
      const tok = ev.target.closest ? ev.target.closest(".tok") : null;
      if (!tok) { hideTip(); return; }
      const t = Number(tok.dataset.i);
      const lp = tk.logprob[t], r = tk.ratio[t];
      const lines = [
        "token " + t + "  id " + tk.id[t] + "  " + (KIND_LABELS[tk.kind[t]] || "?"),
        "text " + JSON.stringify(tk.text[t]),
        "turn " + tk.turn[t] + "  policy v" + tk.version[t],
      ];
      if (tk.kind[t] === 1) lines.push("behavior logprob " + fmt(lp) + "  (p=" + fmt(Math.exp(lp)) + ")");
      if (r !== null && r !== undefined) lines.push("learner ratio " + fmt(r));
      showTip(lines.join("\n"), ev.clientX, ev.clientY);
    };
    container.onmousemove = (ev) => {
      const t = document.getElementById("tooltip");
      if (!t.hidden && ev.target.closest && ev.target.closest(".tok")) showTip(t.textContent, ev.clientX, ev.clientY);
    };
    container.onmouseleave = hideTip;
  }

  // A live run keeps writing: refresh re-reads the logged steps, the curves and the current page.
  async function refresh() {
    try {
      const runs = await api("runs");
      runs.forEach((r, i) => { if (state.runs[i]) state.runs[i].steps = r.steps; });
      const keep = form.elements.step.value;
      fillSteps();
      form.elements.step.value = keep;
      renderCurves(await api("metrics"));
      await loadList();
    } catch (e) {
      setStatus(String(e.message || e), true);
    }
  }

  // ---- start -------------------------------------------------------------------------------------
  async function start() {
    try {
      setStatus(DATA ? "exported snapshot" : "loading…");
      state.runs = await api("runs");
      const names = document.getElementById("run-names");
      state.runs.forEach((r, i) => names.appendChild(el("span", { class: "run-chip", title: r.path },
        el("i", { style: "background:" + PALETTE[i % PALETTE.length] }), r.name)));
      if (state.runs.length > 1) {
        const sel = form.elements.run;
        state.runs.forEach((r, i) => sel.appendChild(el("option", { value: String(i), text: r.name })));
        document.getElementById("run-filter").hidden = false;
      }
      const link = new URLSearchParams(location.hash.slice(1));  // #run=0&step=10&episode=3
      if (link.has("run") && Number(link.get("run")) < state.runs.length) {
        state.run = Number(link.get("run"));
        form.elements.run.value = String(state.run);
      }
      fillSteps();
      if (link.has("step")) form.elements.step.value = link.get("step");
      const [configs, evals, metrics] = await Promise.all([
        Promise.all(state.runs.map((r, i) => api("config", { run: i }))),
        Promise.all(state.runs.map((r, i) => api("eval", { run: i }))),
        api("metrics"),
      ]);
      renderConfig(configs, evals);
      renderCurves(metrics);
      await loadList();
      if (DATA) setStatus("exported snapshot: " + DATA.note);
      else {
        const button = document.getElementById("refresh");
        button.hidden = false;
        button.addEventListener("click", refresh);
      }
      if (link.has("step") && link.has("episode")) {
        const row = document.querySelector('#episode-table tr[data-step="' + Number(link.get("step")) +
          '"][data-index="' + Number(link.get("episode")) + '"]');
        await openEpisode(Number(link.get("step")), Number(link.get("episode")), row);
      }
      document.body.dataset.ready = "1";
    } catch (e) {
      setStatus(String(e.message || e), true);
      document.body.dataset.ready = "error";
    }
  }
  start();
})();
