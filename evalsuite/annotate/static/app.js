// evalsuite annotate: the page. Every action is a call to the JSON API; the server decides what comes next,
// so a reload (or a closed browser) resumes where the annotator stopped. Model output arrives as HTML the
// server rendered with raw HTML escaped; it is the only thing inserted as HTML.
"use strict";

const params = new URLSearchParams(location.search);
const token = params.get("token") || "";
let annotator = params.get("annotator") || localStorage.getItem("annotate.annotator") || "";
if (params.get("annotator")) localStorage.setItem("annotate.annotator", annotator);
let project = null;
let current = null;   // the item on screen
let shownAt = 0;      // performance.now() when it was rendered
let busy = false;     // one request at a time: a key held down cannot vote twice
let likert = null;    // {scores, label, focus}
let order = null;     // ranking: slots in the current order, best first
let focusIdx = 0;

const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "text") node.textContent = v;
    else if (k === "html") node.innerHTML = v;  // server-rendered, escaped model output only
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const c of children) if (c) node.append(c);
  return node;
}

async function api(path, body) {
  const opts = {headers: {"X-Annotate-Token": token}};
  if (body !== undefined) {
    opts.method = "POST";
    opts.headers["Content-Type"] = "application/json";
    opts.body = JSON.stringify(body);
  }
  const res = await fetch(path, opts);
  const data = await res.json();
  if (!res.ok) {
    const err = new Error(data.error || res.statusText);
    err.status = res.status;
    throw err;
  }
  return data;
}

function say(text, ok) {
  $("message").textContent = text || "";
  $("message").className = ok ? "ok" : "";
}

function setProgress(p) {
  const done = p.done || 0;
  $("progress").textContent = `${done} / ${p.total} done` + (p.skipped ? ` (${p.skipped} skipped)` : "");
  $("bar-fill").style.width = `${p.total ? (100 * done) / p.total : 0}%`;
}

async function load() {
  document.body.dataset.state = "busy";
  const data = await api(`/api/next?annotator=${encodeURIComponent(annotator)}`);
  setProgress(data.progress);
  current = data.item;
  $("item").replaceChildren();
  if (!current) {
    $("item").hidden = true;
    $("done").hidden = false;
  } else {
    $("done").hidden = true;
    $("item").hidden = false;
    render(current);
    shownAt = performance.now();
  }
  document.body.dataset.itemId = current ? String(current.id) : "";
  document.body.dataset.state = current ? "ready" : "done";
}

function turnLabel(i, n) {
  return n > 1 ? `Turn ${i + 1}` : "Prompt";
}

function render(item) {
  const box = $("item");
  if (item.skipped_before) box.append(el("p", {text: "You skipped this item earlier."}));
  const n = item.prompt.length;
  if (item.mode === "pairwise") {
    item.prompt.forEach((q, i) => {
      box.append(el("div", {class: "turn-label", text: turnLabel(i, n)}), el("div", {class: "prompt", html: q}));
      const cols = el("div", {class: "answers"});
      for (const a of item.answers) {
        cols.append(el("div", {class: "answer", "data-slot": a.slot},
          el("h3", {text: `Answer ${a.slot}`}), el("div", {class: "body", html: a.turns[i] || "<p><em>(no answer)</em></p>"})));
      }
      box.append(cols);
    });
    const bar = el("div", {class: "verdicts"});
    for (const [choice, label, key] of [["A", "A is better", "1 / ←"], ["B", "B is better", "2 / →"],
                                         ["tie", "Tie", "3 / ↓"], ["both_bad", "Both are bad", "4 / ↑"]]) {
      bar.append(el("button", {type: "button", "data-choice": choice, onclick: () => vote({choice})},
        label + " ", el("kbd", {text: key})));
    }
    box.append(bar);
  } else if (item.mode === "likert") {
    const a = item.answers[0];
    item.prompt.forEach((q, i) => {
      box.append(el("div", {class: "turn-label", text: turnLabel(i, n)}), el("div", {class: "prompt", html: q}),
        el("div", {class: "answer", "data-slot": a.slot}, el("h3", {text: "Answer"}),
          el("div", {class: "body", html: a.turns[i] || "<p><em>(no answer)</em></p>"})));
    });
    likert = {scores: {}, label: null};
    focusIdx = 0;
    const table = el("table", {class: "likert"});
    if (project.criteria.length) {
      const head = el("tr", {}, el("th", {text: "criterion"}));
      for (let s = 1; s <= 5; s++) head.append(el("th", {text: String(s)}));
      table.append(head);
    }
    for (const c of project.criteria) {
      const row = el("tr", {"data-criterion": c}, el("td", {text: c}));
      for (let s = 1; s <= 5; s++) {
        row.append(el("td", {}, el("input", {type: "radio", name: `c-${c}`, value: String(s), "aria-label": `${c} ${s}`,
          onchange: () => { likert.scores[c] = s; }})));
      }
      table.append(row);
    }
    if (project.labels.length) {
      const row = el("tr", {"data-criterion": "__label"}, el("td", {text: "label"}));
      const cell = el("td", {colspan: "5"});
      project.labels.forEach((lab, i) => cell.append(el("label", {},
        el("input", {type: "radio", name: "label", value: lab, onchange: () => { likert.label = lab; }}),
        ` ${i + 1}: ${lab}  `)));
      row.append(cell);
      table.append(row);
    }
    box.append(table, el("textarea", {id: "comment", placeholder: "comment (optional)", maxlength: "10000"}),
      el("div", {}, el("button", {type: "button", class: "submit", onclick: submitLikert}, "Submit ",
        el("kbd", {text: "Enter"}))));
    markFocus();
  } else {
    item.prompt.forEach((q, i) => box.append(el("div", {class: "turn-label", text: turnLabel(i, n)}),
      el("div", {class: "prompt", html: q})));
    order = item.answers.map((a) => a.slot);
    focusIdx = 0;
    box.append(el("p", {text: "Order the answers best first: drag them, or use ↑/↓ to pick one and Shift+↑/↓ to move it."}),
      el("ol", {class: "ranking", id: "ranking"}),
      el("button", {type: "button", class: "submit", onclick: submitRanking}, "Submit ranking ", el("kbd", {text: "Enter"})));
    drawRanking();
  }
}

function likertRows() {
  return [...document.querySelectorAll("table.likert tr[data-criterion]")];
}

function markFocus() {
  if (current.mode === "likert") {
    likertRows().forEach((r, i) => r.classList.toggle("focus", i === focusIdx));
  } else if (current.mode === "ranking") {
    [...document.querySelectorAll("#ranking li")].forEach((r, i) => r.classList.toggle("focus", i === focusIdx));
  }
}

function setLikert(row, value) {
  const c = row.dataset.criterion;
  const name = c === "__label" ? "label" : `c-${c}`;
  const inputs = [...row.querySelectorAll(`input[name="${CSS.escape(name)}"]`)];
  const input = inputs[value - 1];
  if (!input) return false;
  input.checked = true;
  input.dispatchEvent(new Event("change"));
  return true;
}

function drawRanking() {
  const list = $("ranking");
  list.replaceChildren();
  order.forEach((slot, i) => {
    const a = current.answers.find((x) => x.slot === slot);
    const li = el("li", {draggable: "true", "data-slot": slot},
      el("span", {class: "rank", text: `${i + 1}.`}),
      el("div", {class: "body"}, el("h3", {text: `Answer ${slot}`}),
        ...a.turns.map((t, k) => el("div", {}, current.prompt.length > 1 ? el("div", {class: "turn-label", text: `Turn ${k + 1}`}) : null,
          el("div", {html: t})))),
      el("div", {class: "moves"},
        el("button", {type: "button", title: "move up", onclick: () => move(i, -1)}, "▲"),
        el("button", {type: "button", title: "move down", onclick: () => move(i, 1)}, "▼")));
    li.addEventListener("dragstart", (e) => { e.dataTransfer.setData("text/plain", slot); li.classList.add("dragging"); });
    li.addEventListener("dragend", () => li.classList.remove("dragging"));
    li.addEventListener("dragover", (e) => e.preventDefault());
    li.addEventListener("drop", (e) => {
      e.preventDefault();
      const from = order.indexOf(e.dataTransfer.getData("text/plain"));
      if (from < 0 || from === i) return;
      const [s] = order.splice(from, 1);
      order.splice(i, 0, s);
      focusIdx = i;
      drawRanking();
    });
    list.append(li);
  });
  markFocus();
}

function move(i, d) {
  const j = i + d;
  if (j < 0 || j >= order.length) return;
  [order[i], order[j]] = [order[j], order[i]];
  focusIdx = j;
  drawRanking();
}

async function act(fn) {
  if (busy) return;
  busy = true;
  document.body.dataset.state = "busy";
  try {
    await fn();
    await load();
  } catch (err) {
    say(err.message);
    if (err.status === 409) await load().catch(() => {});  // judged elsewhere (another tab): show what is next
    document.body.dataset.state = current ? "ready" : "done";
  } finally {
    busy = false;
  }
}

function elapsed() {
  return Math.max(0, Math.round(performance.now() - shownAt));
}

function vote(verdict) {
  if (!current) return;
  const item = current.id;
  act(async () => {
    await api("/api/submit", {annotator, item, verdict, elapsed_ms: elapsed()});
    say("");
  });
}

function submitLikert() {
  const missing = project.criteria.filter((c) => !(c in likert.scores));
  if (missing.length) return say(`Rate ${missing.join(", ")} first.`);
  if (project.labels.length && !likert.label) return say("Pick a label first.");
  const verdict = {scores: likert.scores, comment: $("comment").value};
  if (project.labels.length) verdict.label = likert.label;
  vote(verdict);
}

function submitRanking() {
  vote({ranking: [...order]});
}

function skip() {
  if (!current) return;
  const item = current.id;
  act(async () => { await api("/api/skip", {annotator, item}); say("Skipped: it comes back at the end.", true); });
}

function undo() {
  act(async () => { await api("/api/undo", {annotator}); say("Undone: your last judgment is back on screen.", true); });
}

function onKey(e) {
  if (!annotator || busy) return;
  const tag = e.target.tagName;
  if (tag === "TEXTAREA" || (tag === "INPUT" && e.target.type !== "radio")) return;
  const k = e.key;
  if (k === "u" || k === "U" || (k === "z" && (e.ctrlKey || e.metaKey))) { e.preventDefault(); return undo(); }
  if (!current) return;
  if (k === "s" || k === "S") { e.preventDefault(); return skip(); }
  if (current.mode === "pairwise") {
    const choice = {"1": "A", ArrowLeft: "A", "2": "B", ArrowRight: "B", "3": "tie", ArrowDown: "tie",
                    "4": "both_bad", ArrowUp: "both_bad"}[k];
    if (choice) { e.preventDefault(); vote({choice}); }
  } else if (current.mode === "likert") {
    const rows = likertRows();
    if (/^[1-9]$/.test(k)) {
      e.preventDefault();
      if (setLikert(rows[focusIdx], Number(k)) && focusIdx < rows.length - 1) focusIdx++;
      markFocus();
    } else if (k === "ArrowDown" || k === "ArrowUp") {
      e.preventDefault();
      focusIdx = Math.min(rows.length - 1, Math.max(0, focusIdx + (k === "ArrowDown" ? 1 : -1)));
      markFocus();
    } else if (k === "Enter") { e.preventDefault(); submitLikert(); }
  } else {
    if (k === "ArrowDown" || k === "ArrowUp") {
      e.preventDefault();
      const d = k === "ArrowDown" ? 1 : -1;
      if (e.shiftKey || e.altKey) move(focusIdx, d);
      else { focusIdx = Math.min(order.length - 1, Math.max(0, focusIdx + d)); markFocus(); }
    } else if (k === "Enter") { e.preventDefault(); submitRanking(); }
  }
}

const KEYS = {
  pairwise: "1 or ← : A is better · 2 or → : B is better · 3 or ↓ : tie · 4 or ↑ : both bad · S: skip · U: undo",
  likert: "↑/↓: pick a criterion · 1-5: rate it (moves to the next) · Enter: submit · S: skip · U: undo",
  ranking: "↑/↓: pick an answer · Shift+↑/↓: move it · Enter: submit · S: skip · U: undo",
};

async function start() {
  try {
    project = await api("/api/project");
  } catch (err) {
    say(err.message);
    return;
  }
  $("title").textContent = `${project.name} · ${project.mode}`;
  $("keys").textContent = KEYS[project.mode];
  $("skip").addEventListener("click", skip);
  $("undo").addEventListener("click", undo);
  document.addEventListener("keydown", onKey);
  if (!annotator) {
    $("login").hidden = false;
    document.body.dataset.state = "login";
    $("login").addEventListener("submit", (e) => {
      e.preventDefault();
      annotator = $("name").value.trim();
      if (!annotator) return;
      localStorage.setItem("annotate.annotator", annotator);
      $("login").hidden = true;
      begin();
    });
    return;
  }
  begin();
}

function begin() {
  $("who").textContent = annotator;
  load().catch((err) => say(err.message));
}

start();
