// The console page: redraws from /api/events (server-sent events) as the snapshot changes, or, when no
// stream is to be had, polls /api/state every second; actions POST with the CSRF token.
// Plain DOM, text only (never innerHTML): every value shown comes from etcd, Traefik or the comparator.
"use strict";

const POLL_MS = 1000;
const CSRF = document.querySelector('meta[name="csrf-token"]').content;
const opened = new Set();  // diff examples the person opened, kept across redraws
let last = null;

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (value !== null && value !== undefined) node.setAttribute(key, value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function svg(tag, attrs) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  return node;
}

function fill(tbody, rows) {
  tbody.replaceChildren(...rows);
}

function age(seconds) {
  if (seconds === null || seconds === undefined) return "-";
  const s = Math.floor(seconds);
  if (s < 60) return s + "s";
  if (s < 3600) return Math.floor(s / 60) + "m " + (s % 60) + "s";
  return Math.floor(s / 3600) + "h " + Math.floor((s % 3600) / 60) + "m";
}

function ms(seconds) {
  return seconds === null || seconds === undefined ? "-" : (seconds * 1000).toFixed(0) + " ms";
}

function bar(parts, cls) {
  // parts: [[css class, share 0..1, title]]
  const node = el("div", {class: "bar " + (cls || "")});
  for (const [kind, share, title] of parts) {
    if (share <= 0) continue;
    const span = el("span", {class: kind, title: title});
    span.style.width = (100 * share).toFixed(1) + "%";
    node.append(span);
  }
  return node;
}

function sparkline(values) {
  const w = 90, h = 18;
  const node = svg("svg", {class: "spark", width: w, height: h, viewBox: `0 0 ${w} ${h}`});
  if (!values || values.length < 2) return node;
  const top = Math.max(...values, 0.001);
  const step = w / (values.length - 1);
  const points = values.map((v, i) => `${(i * step).toFixed(1)},${(h - 1 - (h - 2) * v / top).toFixed(1)}`);
  node.append(svg("polyline", {points: points.join(" ")}));
  const title = svg("title", {});
  title.textContent = "requests/s, peak " + top.toFixed(2);
  node.append(title);
  return node;
}

function say(text, ok) {
  const box = document.getElementById("message");
  box.textContent = text;
  box.className = ok ? "ok" : "refused";
  box.hidden = false;
}

async function act(path, body, button) {
  if (button) button.disabled = true;
  try {
    const response = await fetch(path, {
      method: "POST", credentials: "same-origin",
      headers: {"Content-Type": "application/json", "X-CSRF-Token": CSRF},
      body: JSON.stringify(body),
    });
    let data = {};
    try { data = await response.json(); } catch (e) { data = {error: response.statusText}; }
    say(data.ok ? data.message : "refused: " + (data.error || response.status), !!data.ok);
  } catch (err) {
    say("the console did not answer: " + err, false);
  } finally {
    if (button) button.disabled = false;
    poll();
  }
}

function flip(spec, to, button) { return act("/api/flip", {endpoints: [spec], to: to}, button); }
function flipService(service, to, button) { return act("/api/flip", {service: service, to: to}, button); }
function rollBack(id, button) { return act("/api/rollback", {change: id}, button); }
function promote(spec, to, button) { return act("/api/promote", {endpoints: [spec], to: to}, button); }
function abortPromotion(specs, button) { return act("/api/promotions/abort", {endpoints: specs}, button); }

function drawHeader(s) {
  document.getElementById("strategy").textContent = "strategy " + (s.strategy || "?");
  const links = [];
  if (s.stack && s.stack.web) links.push(el("a", {href: s.stack.web + "/"}, "app"));
  if (s.stack && s.stack.dashboard) links.push(el("a", {href: s.stack.dashboard}, "Traefik"));
  links.push(el("a", {href: "/metrics"}, "metrics"));
  document.getElementById("links").replaceChildren(...links);
  document.getElementById("updated").textContent = "updated " + new Date(s.time * 1000).toLocaleTimeString();
  document.getElementById("problems").replaceChildren(...(s.problems || []).map(p => el("li", {}, p)));
}

function drawProgress(s) {
  let moved = 0, total = 0, canary = 0;
  const rows = (s.progress || []).map(p => {
    moved += p.moved; total += p.total; canary += p.canary;
    const rest = p.total - p.moved - p.canary;
    return el("div", {class: "progress-row", "data-service": p.service},
      el("strong", {}, p.service),
      bar([["svc", p.moved / p.total, "moved"], ["canary", p.canary / p.total, "canary"],
           ["mono", rest / p.total, "on the monolith"]]),
      el("span", {class: "progress-count"}, `${p.moved}/${p.total} moved` + (p.canary ? `, ${p.canary} canary` : "")),
      el("span", {},
        el("button", {onclick: e => flipService(p.service, p.service, e.target)}, "flip all to " + p.service), " ",
        el("button", {onclick: e => flipService(p.service, s.monolith, e.target)}, "all back to " + s.monolith)));
  });
  const target = s.strategy === "new-only" ? "new endpoints only" : "every owned endpoint on its service";
  const answering = Object.entries(s.answering || {}).sort((a, b) => b[1] - a[1]);
  const rps = answering.reduce((sum, [, v]) => sum + v, 0);
  const now = rps ? el("div", {class: "progress-row", id: "answering"},
      el("strong", {}, "traffic now"),
      bar(answering.map(([name, v]) => [name === s.monolith ? "mono" : "svc", v / rps,
                                        `${name} ${(100 * v / rps).toFixed(0)}%`])),
      el("span", {}, answering.map(([name, v]) => `${name} ${(100 * v / rps).toFixed(0)}%`).join(", ")),
      el("span", {class: "legend"}, `${rps.toFixed(1)} req/s over the last minute`)) : null;
  document.getElementById("overall").replaceChildren(
    el("div", {class: "legend"}, `${moved} of ${total} endpoints moved` + (canary ? `, ${canary} on a canary` : "") +
      ` — the plan's target: ${target}`), now);
  document.getElementById("progress").replaceChildren(...rows);
}

function serving(row) {
  if (row.weights) {
    const total = Object.values(row.weights).reduce((a, b) => a + b, 0) || 1;
    const parts = Object.entries(row.weights).sort((a, b) => b[1] - a[1]).map(([name, w]) =>
      [name === last.monolith ? "mono" : "svc", w / total, `${name} ${Math.round(100 * w / total)}%`]);
    return el("span", {}, bar(parts, "split"), " ", el("span", {class: "legend"}, row.serving));
  }
  const kind = row.backend === last.monolith ? "mono" : "svc";
  return el("span", {}, bar([[kind, 1, row.backend]], "split"), " ", row.backend || "-");
}

function drawRoutes(s) {
  const rows = (s.routes || []).map(row => {
    const t = row.traffic || {};
    let action = null, promoting = null;
    if (row.owner && row.owner !== s.monolith && (row.allowed || []).length > 1) {
      const onOwner = row.backend === row.owner && !row.weights;
      action = onOwner
        ? el("button", {onclick: e => flip(row.endpoint, s.monolith, e.target)}, "back to " + s.monolith)
        : el("button", {onclick: e => flip(row.endpoint, row.owner, e.target)}, "flip to " + row.owner);
      if (row.promotion) {
        promoting = el("button", {class: "abort", onclick: e => abortPromotion([row.endpoint], e.target)},
                       "abort promotion " + row.promotion);
      } else if (!onOwner) {
        promoting = el("button", {class: "promote", onclick: e => promote(row.endpoint, row.owner, e.target)},
                       "promote to " + row.owner);
      }
    }
    const err = t.error_pct;
    return el("tr", {"data-endpoint": row.endpoint},
      el("td", {class: "mono"}, row.method), el("td", {class: "mono"}, row.path),
      el("td", {class: "owner"}, row.owner || "-"), el("td", {class: "serving"}, serving(row)),
      el("td", {class: "state"}, row.state + (row.plan_agrees ? "" : " (plan disagrees)") +
         (row.promotion ? ` (promotion ${row.promotion})` : "")),
      el("td", {}, row.mirror ? "→ " + row.mirror : ""),
      el("td", {class: "num"}, t.rps === undefined ? "-" : t.rps.toFixed(2)),
      el("td", {class: "num " + (err ? "bad" : "")}, err === null || err === undefined ? "-" : err.toFixed(1)),
      el("td", {class: "num"}, ms(t.p50)), el("td", {class: "num"}, ms(t.p99)),
      el("td", {}, sparkline(t.spark)), el("td", {class: "actions"}, action, " ", promoting));
  });
  fill(document.querySelector("#routes tbody"), rows);
}

function drawPromotions(s) {
  const rows = (s.promotions || []).map(p => el("tr", {"data-promotion": p.id},
    el("td", {class: "num"}, p.id), el("td", {class: "mono"}, p.endpoints.join(", ")), el("td", {}, p.target),
    el("td", {}, p.step), el("td", {class: "state " + (p.state === "rolled back" ? "bad" : "")},
                             p.outcome || p.state),
    el("td", {class: "who"}, p.who + (p.abort ? `; aborted by ${p.abort}` : "")),
    el("td", {class: "dim"}, p.last),
    el("td", {}, p.state === "running" && !p.abort
      ? el("button", {class: "abort", onclick: e => abortPromotion(p.endpoints, e.target)}, "Abort") : null)));
  fill(document.querySelector("#promotions tbody"), rows.length ? rows :
    [el("tr", {}, el("td", {colspan: 8, class: "dim"}, "no promotions yet: a route's \"promote to\" button starts one"))]);
}

function drawInstances(s) {
  const rows = [];
  for (const b of s.instances || []) {
    if (!b.instances.length) {
      rows.push(el("tr", {"data-backend": b.backend}, el("td", {}, b.backend), el("td", {class: "dim", colspan: 8}, b.state)));
      continue;
    }
    b.instances.forEach((i, n) => rows.push(el("tr", {"data-backend": b.backend, "data-address": i.address},
      el("td", {}, n === 0 ? b.backend : ""), el("td", {}, i.name || i.id || "-"),
      el("td", {class: "mono"}, (i.address || "").replace("http://", "")), el("td", {}, i.version || "-"),
      el("td", {}, i.state || "registered"),
      el("td", {class: "health " + (i.healthy ? "good" : "bad")}, i.healthy ? "healthy" : "not healthy"),
      el("td", {}, i.traefik || "-"), el("td", {class: "num"}, age(i.age)),
      el("td", {class: "num"}, i.restarts || 0))));
  }
  fill(document.querySelector("#instances tbody"), rows);
}

function sideBySide(example) {
  const rows = (example.rows || []).map(r => el("tr", {class: r.mark === "≠" ? "real" : r.mark === "~" ? "soft" : ""},
    el("td", {class: "l"}, r.left), el("td", {class: "mark"}, r.mark), el("td", {class: "r"}, r.right)));
  const m = example.monolith || {}, c = example.candidate || {};
  return el("table", {class: "sbs"},
    el("thead", {}, el("tr", {}, el("th", {}, `monolith: ${m.status}`), el("th", {class: "mark"}, ""),
                                 el("th", {}, `candidate: ${c.status}`))),
    el("tbody", {}, rows));
}

function drawDiffs(s) {
  const blocks = (s.diffs || []).map(d => {
    const rate = d.diff_rate === null ? "-" : (100 * d.diff_rate).toFixed(1) + " %";
    const fields = (d.patterns || []).slice(0, 5).map(p => `${p.pattern} (${p.kind}, ${p.count})`).join("; ");
    const examples = (d.examples || []).map((ex, n) => {
      const key = d.endpoint + "#" + n;
      const open = opened.has(key);
      return el("div", {class: "example"},
        el("button", {onclick: () => { open ? opened.delete(key) : opened.add(key); draw(last); }},
           (open ? "hide " : "show ") + `${ex.request.method} ${ex.request.target}`),
        " ", el("span", {class: "dim"}, ex.pattern),
        open ? sideBySide(ex) : null);
    });
    return el("div", {class: "diff", "data-endpoint": d.endpoint},
      el("div", {}, el("strong", {class: "mono"}, d.endpoint), ` vs ${d.target || "?"}: `,
         el("span", {class: d.differing ? "bad" : "good"}, rate), ` differing of ${d.compared} compared`,
         ` (seen ${d.seen}, dropped ${d.dropped}, skipped ${d.skipped}, errors ${d.errors})`),
      fields ? el("div", {class: "legend"}, "top differing fields: " + fields) : null,
      d.last_error ? el("div", {class: "bad"}, "last error: " + d.last_error) : null,
      examples);
  });
  document.getElementById("diffs").replaceChildren(
    ...(blocks.length ? blocks : [el("p", {class: "dim"}, "nothing shadowed yet (strangler shadow ENDPOINT --to SERVICE)")]));
}

function drawData(s) {
  const rows = (s.data || []).map(d => {
    const link = (s.links || {})[d.service] || {};
    const verify = d.collisions ? el("span", {class: "bad"}, `${d.collisions} id collision(s)`)
      : link.rows !== undefined ? `copied ${link.rows} rows, no collisions` : "no collisions";
    return el("tr", {"data-service": d.service},
      el("td", {}, d.service), el("td", {}, d.direction),
      el("td", {class: d.follower === "running" ? "" : "bad"}, d.follower),
      el("td", {class: "num"}, d.lag === null ? "-" : d.lag.toFixed(1) + " s"),
      el("td", {}, d.last_pass_age === null ? "never" : age(d.last_pass_age) + " ago"),
      el("td", {}, verify),
      el("td", {class: d.error ? "bad" : ""}, d.error || (d.notes || []).join("; ")));
  });
  fill(document.querySelector("#data tbody"), rows.length ? rows :
    [el("tr", {}, el("td", {colspan: 7, class: "dim"}, "no service's data is linked"))]);
}

function drawHistory(s) {
  const rows = (s.history || []).map(c => el("tr", {"data-change": c.id},
    el("td", {class: "num"}, c.id), el("td", {}, c.time.replace("T", " ").slice(0, 19)), el("td", {class: "who"}, c.who),
    el("td", {class: c.in_effect ? "" : "dim"}, c.what + (c.in_effect ? "" : " (undone)")),
    el("td", {class: "num"}, c.revision),
    el("td", {}, c.in_effect && c.rollback_of === null
      ? el("button", {class: "rollback", onclick: e => rollBack(c.id, e.target)}, "Roll back") : null)));
  fill(document.querySelector("#history tbody"), rows);
}

// Each section is redrawn only when what it shows changed: a button is never replaced under the pointer
// for nothing, and an idle page costs next to no work.
const drawn = {};
function section(name, draw, s, ...keys) {
  const seen = JSON.stringify(keys.map(k => s[k])) + (name === "diffs" ? [...opened].join() : "");
  if (drawn[name] === seen) return;
  drawn[name] = seen;
  draw(s);
}

function draw(s) {
  drawHeader(s);
  section("progress", drawProgress, s, "progress", "strategy", "monolith", "answering");
  section("routes", drawRoutes, s, "routes", "monolith");
  section("promotions", drawPromotions, s, "promotions");
  section("instances", drawInstances, s, "instances");
  section("diffs", drawDiffs, s, "diffs");
  section("data", drawData, s, "data", "links");
  section("history", drawHistory, s, "history");
}

function show(s) {
  last = s;
  draw(last);
  document.body.dataset.ready = "1";
}

let inFlight = false;
async function poll() {
  if (inFlight) return;
  inFlight = true;
  try {
    const response = await fetch("/api/state", {credentials: "same-origin", cache: "no-store"});
    if (response.ok) {
      show(await response.json());
    } else {
      document.getElementById("updated").textContent = "the console answered " + response.status;
    }
  } catch (err) {
    document.getElementById("updated").textContent = "the console is not answering";
  } finally {
    inFlight = false;
  }
}

// Live: the stream's events; it ends every two minutes and EventSource reconnects by itself. A refused
// stream (every one taken: 503) or none at all falls back to polling, for good on this page.
let polling = null;
function startPolling() {
  if (polling !== null) return;
  document.body.dataset.live = "polling";
  polling = setInterval(poll, POLL_MS);
}

function listen() {
  if (!window.EventSource) return startPolling();
  const source = new EventSource("/api/events");
  source.onmessage = event => {
    document.body.dataset.live = "events";
    show(JSON.parse(event.data));
  };
  source.onerror = () => {
    if (source.readyState === EventSource.CLOSED) {  // refused (not a stream): give up on streams
      source.close();
      startPolling();
    }
  };
}

poll();
listen();
