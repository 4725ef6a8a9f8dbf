// llamalog web view. Every string from the database reaches the page through textContent
// or an attribute set on a DOM node: nothing is ever parsed as HTML.
"use strict";

(function () {
  const main = document.getElementById("main");
  const page = document.body.dataset.page;
  const CHUNK = 200; // children drawn at a time: a 50,000-job level never freezes the page

  // ---- building nodes --------------------------------------------------------------------
  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props || {})) {
      if (value === undefined || value === null) continue;
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = String(value);
      else if (key === "dataset") Object.assign(node.dataset, value);
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, String(value));
    }
    for (const child of children) {
      if (child === null || child === undefined || child === false) continue;
      node.append(typeof child === "string" ? document.createTextNode(child) : child);
    }
    return node;
  }

  // Links are always built from a fixed path and encoded parts: a value such as
  // "javascript:..." can only ever be a path segment of this site.
  function jobHref(id) { return "/jobs/" + encodeURIComponent(id); }
  function entityHref(type, id) {
    return "/entities/" + encodeURIComponent(type) + "/" + encodeURIComponent(id);
  }
  function link(href, text, props) { return el("a", Object.assign({ href: href, text: text }, props || {})); }

  function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); }

  function when(iso) {
    if (!iso) return "–";
    const d = new Date(iso);
    if (isNaN(d)) return String(iso);
    return d.toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z");
  }

  function duration(seconds) {
    if (seconds === null || seconds === undefined) return "–";
    if (seconds < 1) return (seconds * 1000).toFixed(1) + " ms";
    if (seconds < 60) return seconds.toFixed(2) + " s";
    if (seconds < 3600) return Math.floor(seconds / 60) + " min " + Math.round(seconds % 60) + " s";
    return Math.floor(seconds / 3600) + " h " + Math.round((seconds % 3600) / 60) + " min";
  }

  function badge(status) {
    return el("span", { class: "badge status-" + String(status).replace(/[^a-z]/g, ""), text: status });
  }

  function cut(text, limit) {
    const value = text === null || text === undefined ? "" : String(text);
    if (value.length <= limit) return el("span", { text: value });
    const span = el("span", { class: "cut", text: value.slice(0, limit) + "…" });
    const more = el("button", {
      class: "more", type: "button", text: "show all " + value.length.toLocaleString() + " characters",
      onclick: () => { span.textContent = value; more.remove(); },
    });
    return el("span", {}, span, " ", more);
  }

  function pretty(value) {
    try { return JSON.stringify(value, null, 2); } catch (e) { return String(value); }
  }

  async function getJSON(url) {
    const response = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } });
    let body = null;
    try { body = await response.json(); } catch (e) { body = null; }
    if (!response.ok) {
      const message = body && body.error ? body.error : response.status + " " + response.statusText;
      throw new Error(message);
    }
    return body;
  }

  function problem(error) { return el("p", { class: "error", role: "alert", text: String(error.message || error) }); }

  function pathPart(prefix) {
    const rest = location.pathname.slice(prefix.length);
    return rest.split("/").map(decodeURIComponent);
  }

  // ---- events table (job panel, entity, tail) -----------------------------------------
  function eventRow(event, options) {
    const opts = options || {};
    const entity = event.entity_type ? link(entityHref(event.entity_type, event.entity_id), event.entity_type + " " + event.entity_id, { class: "entity-link" }) : "";
    const related = event.related_type ? link(entityHref(event.related_type, event.related_id), event.related_type + " " + event.related_id, { class: "entity-link" }) : "";
    const cells = [
      el("td", { class: "time", text: when(event.logged_at) }),
      el("td", {}, el("span", { class: "cat cat-" + String(event.category).toLowerCase(), text: event.category })),
      el("td", { text: event.level }),
    ];
    if (opts.jobs) {
      cells.push(el("td", {}, event.job_id ? link(jobHref(event.job_id), event.job_name || event.job_id, { class: "job-link" }) : "–"));
      cells.push(el("td", {}, event.root_job_id ? link(jobHref(event.root_job_id), "run", { class: "run-link" }) : "–"));
    }
    cells.push(el("td", { class: "message" }, cut(event.message, 300)));
    cells.push(el("td", {}, entity, related ? " → " : "", related));
    const details = event.details === null || event.details === undefined ? null : el("details", {}, el("summary", { text: "details" }), el("pre", { text: pretty(event.details) }));
    cells.push(el("td", {}, details));
    return el("tr", { class: "event" + (event.category === "FAILED" ? " failed" : ""), dataset: { id: String(event.id) } }, ...cells);
  }

  function eventTable(events, options) {
    const heads = ["time", "category", "level"];
    if (options && options.jobs) heads.push("job", "run");
    heads.push("message", "entity", "details");
    const body = el("tbody", {}, ...events.map((e) => eventRow(e, options)));
    return el("table", { class: "events" }, el("thead", {}, el("tr", {}, ...heads.map((h) => el("th", { text: h })))), body);
  }

  // ---- runs ----------------------------------------------------------------------------
  const RUN_FILTERS = ["name", "status", "since", "until", "id", "page"];

  function runsPage() {
    const params = new URLSearchParams(location.search);
    const input = (name, label, type) => el("label", {}, label, el("input", { id: "f-" + name, name: name, type: type || "text", value: params.get(name) || "" }));
    const status = el("select", { id: "f-status", name: "status" },
      ...["", "failed", "succeeded", "cancelled", "unfinished"].map((value) => {
        const option = el("option", { value: value, text: value || "any" });
        if (value === (params.get("status") || "")) option.selected = true;
        return option;
      }));
    const form = el("form", { class: "filters", method: "get", action: "/" },
      input("name", "name "), el("label", {}, "status ", status),
      input("since", "since (UTC) ", "datetime-local"), input("until", "until (UTC) ", "datetime-local"),
      input("id", "job or task id "), el("button", { type: "submit", text: "Filter" }));
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      const query = new URLSearchParams();
      for (const name of ["name", "status", "since", "until", "id"]) {
        const value = form.elements[name].value.trim();
        if (value) query.set(name, value);
      }
      history.pushState(null, "", "/" + (query.toString() ? "?" + query : ""));
      load();
    });
    const result = el("div", { id: "runs" });
    clear(main);
    main.append(el("h1", { text: "Runs" }), form, result);
    window.addEventListener("popstate", load);

    async function load() {
      const current = new URLSearchParams(location.search);
      const query = new URLSearchParams();
      for (const name of RUN_FILTERS) if (current.get(name)) query.set(name, current.get(name));
      let data;
      try { data = await getJSON("/api/runs?" + query); } catch (error) { clear(result); result.append(problem(error)); return; }
      clear(result);
      if (!data.runs.length) { result.append(el("p", { class: "empty", text: "No runs match." })); return; }
      const rows = data.runs.map((run) => el("tr", { class: "run status-row-" + run.status, dataset: { id: run.job_id } },
        el("td", {}, link(jobHref(run.job_id), run.name || "(unnamed job)", { class: "run-name" }), el("div", { class: "id", text: run.job_id })),
        el("td", { class: "time", text: when(run.started_at) }),
        el("td", { class: "num", text: duration(run.seconds) }),
        el("td", {}, badge(run.status), run.attempts > 1 ? el("span", { class: "retried", text: " ↻ " + run.attempts + " attempts" }) : ""),
        el("td", { class: "num", text: run.events.toLocaleString() }),
        el("td", { class: "num" + (run.failures ? " has-failures" : ""), text: run.failures.toLocaleString() })));
      const table = el("table", { class: "runs" },
        el("thead", {}, el("tr", {}, ...["run", "started", "duration", "status", "events", "failures"].map((h) => el("th", { text: h })))),
        el("tbody", {}, ...rows));
      const pager = el("div", { class: "pager" });
      const go = (pageNumber) => { const next = new URLSearchParams(location.search); next.set("page", String(pageNumber)); history.pushState(null, "", "/?" + next); load(); };
      if (data.page > 0) pager.append(el("button", { type: "button", class: "prev", text: "← newer", onclick: () => go(data.page - 1) }));
      pager.append(el("span", { text: " page " + (data.page + 1) + " " }));
      if (data.more) pager.append(el("button", { type: "button", class: "next", text: "older →", onclick: () => go(data.page + 1) }));
      result.append(table, pager, el("p", { class: "refreshed", text: "refreshed " + new Date().toLocaleTimeString() }));
    }
    load();
    // Refreshes while open; paused while the tab is hidden.
    setInterval(() => { if (!document.hidden) load(); }, 5000);
  }

  // ---- a run: tree beside its timeline --------------------------------------------------
  // The tree arrives as columns, one row per job, a parent before its children: one object
  // per job is built here, children nested, with what the server leaves to the page (a
  // subtree's failed jobs, a job's events, a finished job's duration).
  function unpack(data) {
    const c = data.jobs;
    const jobs = new Array(c.id.length);
    for (let i = 0; i < jobs.length; i++) {
      let events = 0;
      for (const key in c.counts[i]) events += c.counts[i][key];
      const job = {
        id: c.id[i], name: c.name[i], status: c.status[i], start: c.start[i], end: c.end[i],
        last: c.last[i], seconds: c.seconds[i], attempts: c.attempts[i], retried: c.retried[i],
        failed: c.failed[i], failures: c.failed[i] ? 1 : 0, events: events, counts: c.counts[i],
        error_type: c.error_type[i], error_message: c.error_message[i], children: [],
      };
      if (job.seconds === null) job.seconds = Math.max(0, (job.end - job.start) / 1000);
      jobs[i] = job;
      if (c.parent[i] >= 0) jobs[c.parent[i]].children.push(job);
    }
    for (let i = jobs.length - 1; i > 0; i--) jobs[c.parent[i]].failures += jobs[i].failures;
    return { root: jobs[0], asked: data.asked };
  }

  function drawRun(data, options) {
    const opts = options || {};
    const root = data.root;
    const parents = new Map();
    let t0 = root.start, t1 = t0;
    const stack = [root];
    while (stack.length) {
      const job = stack.pop();
      const end = job.end || job.last;
      if (end > t1) t1 = end;
      if (job.start < t0) t0 = job.start;
      for (const child of job.children) { parents.set(child.id, job); stack.push(child); }
    }
    const span = Math.max(t1 - t0, 1);
    const open = new Set([root.id]);
    // Failed branches open; the asked job's ancestors too, so it is in view.
    const walk = [root];
    while (walk.length) {
      const job = walk.pop();
      if (job.failures > 0 && job.children.some((c) => c.failures > 0)) open.add(job.id);
      for (const child of job.children) if (child.failures > 0) walk.push(child);
    }
    const byId = new Map();
    const index = [root];
    while (index.length) { const job = index.pop(); byId.set(job.id, job); index.push(...job.children); }
    let selected = data.asked && byId.has(data.asked) ? data.asked : root.id;
    const shown = new Map(); // job id -> how many of its children are drawn
    for (let child = selected, p = parents.get(selected); p; child = p.id, p = parents.get(p.id)) {
      open.add(p.id);
      const position = p.children.findIndex((c) => c.id === child);
      if (position >= CHUNK) shown.set(p.id, Math.ceil((position + 1) / CHUNK) * CHUNK);
    }

    const summary = el("div", { class: "run-summary" },
      el("h1", {}, el("span", { text: root.name || "(unnamed job)" }), " ", badge(root.status)),
      el("p", {}, el("span", { class: "id", text: root.id }), " · started " + when(root.start) + " · " + duration(root.seconds) + " · " + root.failures + " failed job(s)"));
    const toolbar = el("div", { class: "toolbar" },
      el("button", { type: "button", id: "expand-level", text: "expand a level", onclick: expandLevel }),
      el("button", { type: "button", id: "collapse-all", text: "collapse all", onclick: () => { open.clear(); open.add(root.id); render(); } }));
    const axis = el("div", { class: "axis" },
      el("span", { class: "axis-start", text: when(new Date(t0).toISOString()) }),
      el("span", { class: "axis-end", text: duration(span / 1000) + " · " + when(new Date(t1).toISOString()) }));
    const header = el("div", { class: "gantt-head" }, el("div", { class: "label-head", text: "job" }), axis);
    const rows = el("div", { class: "gantt", role: "tree" });
    const panel = el("aside", { id: "job-panel", class: "job-panel" });
    clear(main);
    main.append(summary, toolbar, el("div", { class: "run-layout" }, el("div", { class: "tree-side" }, header, rows), panel));

    function row(job, depth) {
      const hasChildren = job.children.length > 0;
      const toggle = el("button", {
        type: "button", class: "toggle", "aria-label": open.has(job.id) ? "collapse" : "expand",
        text: hasChildren ? (open.has(job.id) ? "▾" : "▸") : "·",
        onclick: (event) => { event.stopPropagation(); if (!hasChildren) return; if (open.has(job.id)) open.delete(job.id); else open.add(job.id); render(); },
      });
      if (!hasChildren) toggle.disabled = true;
      const label = el("div", { class: "label" }, toggle,
        el("span", { class: "name", text: job.name || "(unnamed job)" }), " ", badge(job.status),
        job.retried ? el("span", { class: "retried", title: "retried", text: " ↻" + (job.attempts > 1 ? job.attempts : "") }) : "",
        job.failures && hasChildren && !open.has(job.id) ? el("span", { class: "hidden-failures", text: " " + job.failures + " failed below" }) : "",
        hasChildren ? el("span", { class: "count", text: " (" + job.children.length + ")" }) : "");
      label.style.paddingLeft = depth * 16 + "px";
      const start = job.start, end = job.end || job.last;
      const bar = el("div", { class: "bar status-bar-" + job.status + (job.end ? "" : " unfinished"), title: duration(job.seconds) });
      bar.style.left = ((start - t0) / span) * 100 + "%";
      bar.style.width = Math.max(((end - start) / span) * 100, 0.2) + "%";
      const lane = el("div", { class: "lane" }, bar);
      const line = el("div", {
        class: "job" + (job.id === selected ? " selected" : "") + (job.failed ? " failed" : ""), role: "treeitem",
        dataset: { id: job.id }, tabindex: "0",
        onclick: () => select(job.id),
        onkeydown: (event) => { if (event.key === "Enter") select(job.id); },
      }, label, lane);
      if (hasChildren) line.setAttribute("aria-expanded", String(open.has(job.id)));
      return line;
    }

    function moreRow(parent, rest, depth) {
      const button = el("button", {
        type: "button", class: "more-children", text: "… " + rest.toLocaleString() + " more",
        onclick: () => { shown.set(parent.id, (shown.get(parent.id) || CHUNK) + CHUNK); render(); },
      });
      button.style.marginLeft = depth * 16 + "px";
      return el("div", { class: "job more-row" }, button);
    }

    // Rows are built off the page in slices of ROWS_PER_SLICE, one slice per frame, and
    // swapped in at once: thousands of rows never block the page for long, and the old rows
    // stay (with the scroll position) until the new ones are ready.
    const ROWS_PER_SLICE = 400;
    let generation = 0;
    function render() {
      const mine = ++generation;
      const fragment = document.createDocumentFragment();
      // A stack rather than recursion: a tree thousands of levels deep draws as well.
      const todo = [{ job: root, depth: 0 }];
      function slice() {
        if (mine !== generation) return; // a newer render started: this one is stale
        for (let drawn = 0; todo.length && drawn < ROWS_PER_SLICE; drawn++) {
          const item = todo.pop();
          if (item.more) { fragment.append(moreRow(item.more, item.rest, item.depth)); continue; }
          const job = item.job;
          fragment.append(row(job, item.depth));
          if (!open.has(job.id)) continue;
          const limit = shown.get(job.id) || CHUNK;
          if (job.children.length > limit) todo.push({ more: job, rest: job.children.length - limit, depth: item.depth + 1 });
          const count = Math.min(limit, job.children.length);
          for (let i = count - 1; i >= 0; i--) todo.push({ job: job.children[i], depth: item.depth + 1 });
        }
        if (todo.length) { requestAnimationFrame(slice); return; }
        clear(rows);
        rows.append(fragment);
      }
      slice();
    }

    async function select(id) {
      selected = id;
      for (const node of rows.querySelectorAll(".job.selected")) node.classList.remove("selected");
      for (const node of rows.querySelectorAll(".job")) if (node.dataset.id === id) node.classList.add("selected");
      if (opts.onSelect) opts.onSelect(id);
      clear(panel);
      const job = byId.get(id);
      panel.append(el("h2", { text: (job && job.name) || "(unnamed job)" }), el("p", { class: "id", text: id }));
      if (opts.loadJob) {
        panel.append(el("p", { class: "loading", text: "Loading…" }));
        try { jobPanel(panel, await opts.loadJob(id), job, root, parents.get(id)); } catch (error) { clear(panel); panel.append(problem(error)); }
      } else if (job) {
        exportPanel(panel, job);
      }
    }

    // One level deeper for every drawn branch, but never more than LEVEL_ROWS new rows at
    // once: a 50,000-job tree opens level by level without freezing the page.
    function expandLevel() {
      const LEVEL_ROWS = 1000;
      let added = 0;
      const frontier = [];
      const todo = [root];
      while (todo.length) {
        const job = todo.pop();
        if (!job.children.length) continue;
        if (!open.has(job.id)) { frontier.push(job); continue; }
        const limit = shown.get(job.id) || CHUNK;
        for (let i = Math.min(limit, job.children.length) - 1; i >= 0; i--) todo.push(job.children[i]);
      }
      for (const job of frontier) {
        if (added >= LEVEL_ROWS) break;
        open.add(job.id);
        added += Math.min(job.children.length, CHUNK);
      }
      render();
    }

    render();
    select(selected);
    return { render: render };
  }

  // ---- a job's panel ---------------------------------------------------------------------
  function field(label, value) {
    return el("div", { class: "field" }, el("dt", { text: label }), el("dd", {}, value));
  }

  function jobPanel(panel, job, node, root, parent) {
    clear(panel);
    const name = node ? node.name : null;
    panel.append(el("h2", {}, el("span", { text: name || "(unnamed job)" }), " ", node ? badge(node.status) : ""));
    const facts = el("dl", { class: "facts" }, field("job", el("span", { class: "id", text: job.job_id })));
    if (node) {
      facts.append(
        field("started", when(node.start)),
        field("ended", node.end ? when(node.end) : "unfinished (no record: running, or its process was killed)"),
        field("duration", duration(node.seconds)),
        field("parent", parent ? link(jobHref(parent.id), parent.name || parent.id, { class: "parent-link" }) : "– (a root)"),
        field("events", Object.entries(node.counts).map(([k, v]) => k + " " + v).join(", ") || "none"));
    }
    facts.append(field("run", link(jobHref(job.root_job_id), (root && root.name) || job.root_job_id, { class: "root-link" })));
    panel.append(facts);
    if (node && (node.error_type || node.error_message)) {
      panel.append(el("div", { class: "error-box" }, el("strong", { text: node.error_type || "error" }), ": ", cut(node.error_message, 2000)));
    }
    if (job.traceback) {
      panel.append(el("details", { class: "traceback", open: "" }, el("summary", { text: "traceback" }), el("pre", { class: "traceback-text", text: job.traceback })));
    }
    if (job.entities.length) {
      panel.append(el("h3", { text: "entities" }), el("ul", { class: "entities" },
        ...job.entities.map((e) => el("li", {}, link(entityHref(e.type, e.id), e.type + " " + e.id, { class: "entity-link" })))));
    }
    if (job.attempts.length) {
      panel.append(el("h3", { text: "attempts" }), el("table", { class: "attempts" },
        el("thead", {}, el("tr", {}, ...["#", "status", "started", "ended", "error", "host/pid", "details"].map((h) => el("th", { text: h })))),
        el("tbody", {}, ...job.attempts.map((a) => el("tr", {},
          el("td", { text: a.attempt }), el("td", {}, badge(a.status)), el("td", { class: "time", text: when(a.started_at) }),
          el("td", { class: "time", text: when(a.ended_at) }),
          el("td", {}, cut([a.error_type, a.error_message].filter(Boolean).join(": "), 300)),
          el("td", { text: (a.host || "") + (a.pid ? "/" + a.pid : "") }),
          el("td", {}, a.details ? el("details", {}, el("summary", { text: "details" }), el("pre", { text: pretty(a.details) })) : ""))))));
    }
    const total = node ? node.events : job.event_rows.length;
    panel.append(el("h3", { text: "events" + (job.event_rows.length < total ? " (first " + job.event_rows.length + " of " + total + ")" : "") }),
      eventTable(job.event_rows, {}));
  }

  function exportPanel(panel, job) {
    panel.append(el("dl", { class: "facts" },
      field("status", badge(job.status)),
      field("started", when(job.start)),
      field("ended", job.end ? when(job.end) : "unfinished"),
      field("duration", duration(job.seconds)),
      field("attempts", String(job.attempts)),
      field("events", String(job.events))));
    if (job.error_type || job.error_message) {
      panel.append(el("div", { class: "error-box" }, el("strong", { text: job.error_type || "error" }), ": ", cut(job.error_message, 2000)));
    }
  }

  function runPage() {
    const id = pathPart("/jobs/").join("/");
    const jobUrl = (jobId) => "/api/jobs/" + encodeURIComponent(jobId);
    // The named job's panel is asked for beside its tree, not after it.
    let first = getJSON(jobUrl(id));
    first.catch(() => {}); // its error is shown where it is used
    getJSON("/api/tree/" + encodeURIComponent(id)).then(unpack).then((data) => {
      document.title = (data.root.name || "run") + " · llamalog";
      drawRun(data, {
        loadJob: (jobId) => {
          const ready = jobId === id && first ? first : getJSON(jobUrl(jobId));
          first = null;
          return ready;
        },
        // The address names the selected job, so it can be shared.
        onSelect: (jobId) => { if (jobId !== id || location.pathname !== jobHref(jobId)) history.replaceState(null, "", jobHref(jobId)); },
      });
    }).catch((error) => { clear(main); main.append(el("h1", { text: "Run" }), problem(error)); });
  }

  function exportPage() {
    drawRun(unpack(JSON.parse(document.getElementById("tree-data").textContent)), {});
  }

  // ---- an entity -----------------------------------------------------------------------
  function entityPage() {
    const [type, id] = [pathPart("/entities/")[0], pathPart("/entities/").slice(1).join("/")];
    clear(main);
    main.append(el("h1", {}, el("span", { text: type + " " + id })));
    getJSON(entityHref(type, id).replace("/entities/", "/api/entities/")).then((data) => {
      if (!data.events.length) { main.append(el("p", { class: "empty", text: "No events about this entity." })); return; }
      const failures = data.events.filter((e) => e.category === "FAILED").length;
      main.append(el("p", { text: data.total + " event(s), " + failures + " failure(s)" + (data.total > data.events.length ? "; the newest " + data.events.length + " shown" : "") }),
        eventTable(data.events, { jobs: true }));
    }).catch((error) => main.append(problem(error)));
  }

  // ---- tail ------------------------------------------------------------------------------
  function tailPage() {
    const params = new URLSearchParams(location.search);
    const root = params.get("root") || "";
    const form = el("form", { class: "filters", method: "get", action: "/tail" },
      el("label", {}, "run (root job id) ", el("input", { id: "f-root", name: "root", value: root })),
      el("button", { type: "submit", text: "Follow" }));
    const status = el("p", { class: "tail-status", text: "following…" });
    const table = eventTable([], { jobs: true });
    const body = table.querySelector("tbody");
    clear(main);
    main.append(el("h1", { text: root ? "Tail of run " : "Tail" }, root ? el("span", { class: "id", text: root }) : ""), form, status, table);
    let last = null;
    const MAX_ROWS = 1000;
    async function poll() {
      const query = new URLSearchParams({ limit: last === null ? "50" : "500" });
      if (root) query.set("root", root);
      if (last !== null) query.set("after", String(last));
      try {
        const data = await getJSON("/api/tail?" + query);
        for (const event of data.events) body.prepend(eventRow(event, { jobs: true })); // newest on top
        while (body.rows.length > MAX_ROWS) body.deleteRow(body.rows.length - 1);
        if (data.last_id !== null && data.last_id !== undefined) last = data.last_id;
        else if (last === null) last = 0;
        status.textContent = "following · " + body.rows.length + " event(s) shown · polled " + new Date().toLocaleTimeString();
      } catch (error) {
        status.textContent = "polling failed: " + String(error.message || error);
      }
      // Polling, not LISTEN: it works through PgBouncer too.
      setTimeout(poll, 1000);
    }
    poll();
  }

  const pages = { runs: runsPage, run: runPage, entity: entityPage, tail: tailPage, export: exportPage };
  (pages[page] || runsPage)();
})();
