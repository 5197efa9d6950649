// mailferry console. Plain JS, no build step. The grid renders only the rows in view
// (windowing), so 10,000 mailboxes scroll, sort, filter and select without delay.
'use strict';

const ROW_H = 30; // must match --row in app.css
const OVERSCAN = 15;

const RESULTS = [
  // key, label (SPEC §6), icon, sides
  ['refreshed', 'Refreshed', '✓', ['source', 'target']],
  ['not_changed', 'Not changed', '=', ['source', 'target']],
  ['missing', 'Not refreshed - missing mailboxes', '✖', ['source', 'target']],
  ['manual', 'Not refreshed - addresses entered manually', '⚠', ['target']],
  ['not_created', 'Not refreshed - mailboxes not created yet', '⚠', ['target']],
];
const RESULT_LABEL = Object.fromEntries(RESULTS.map(([k, l]) => [k, l]));

const state = {
  entries: [],      // as /api/entries gives them
  byId: new Map(),
  view: [],         // filtered and sorted entries
  selected: new Set(),
  anchor: null,     // index in view for Shift+click
  cursor: null,     // index in view for the keyboard
  sort: { key: 'source', dir: 1 },
  filter: '',
  stateFilter: '',
  progress: null,
  lastRefresh: new Map(), // entry id -> {source, target}
  renderQueued: false,
  // What the grid's body shows now: the window [first, last) and each row's HTML, so that a
  // tick of the event stream replaces only the rows that changed (a migration changes a few
  // rows a second; redrawing the whole window each second costs the browser far more).
  drawn: null,
  // Panels drawn only while shown: a hidden Dashboard is brought up to date when it is opened.
  stale: { dashboard: false, progress: false },
};

const $ = (sel) => document.querySelector(sel);
// `n` and the noun that goes with it: "1 mailbox", "4 mailboxes".
const counted = (n, one, many) => `${n} ${n === 1 ? one : many}`;

function esc(s) {
  return String(s ?? '').replace(/[&<>"']/g, (c) => ({
    '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;',
  }[c]));
}

function humanBytes(n) {
  const units = ['B', 'kB', 'MB', 'GB', 'TB'];
  let v = Number(n) || 0;
  let u = 0;
  while (v >= 1000 && u + 1 < units.length) { v /= 1000; u += 1; }
  return u === 0 ? `${v} B` : `${v.toFixed(1)} ${units[u]}`;
}

function say(text, kind = 'info') {
  const m = $('#message');
  m.textContent = text;
  m.className = `message ${kind}`;
}

async function api(method, path, body) {
  const opts = { method, headers: {} };
  if (method !== 'GET') {
    opts.headers['Content-Type'] = 'application/json';
    opts.body = JSON.stringify(body ?? {});
  }
  const r = await fetch(path, opts);
  const text = await r.text();
  let v = null;
  try { v = JSON.parse(text); } catch (_) { v = { error: text.trim() }; }
  if (!r.ok) {
    const e = new Error((v && v.error) || `${r.status} ${r.statusText}`);
    e.status = r.status;
    e.body = v;
    throw e;
  }
  return v;
}

// ------------------------------------------------------------------ entries and the view

function primary(e) {
  return (e.source.addresses && e.source.addresses[0]) || e.source.login;
}
function targetOf(e) {
  if (!e.target) return '';
  return (e.target.addresses && e.target.addresses[0]) || e.target.login || '';
}
function refreshText(e) {
  const r = state.lastRefresh.get(e.id);
  if (!r) return '';
  return ['source', 'target'].filter((s) => r[s]).map((s) => `${s}: ${RESULT_LABEL[r[s]] || r[s]}`).join('; ');
}

function setEntries(list) {
  state.entries = list;
  state.byId = new Map(list.map((e) => [e.id, e]));
  for (const e of list) {
    if (e._hay !== undefined) continue;
    e._hay = [e.id, e.source.login, ...(e.source.addresses || []),
      ...(e.target ? [e.target.login, ...(e.target.addresses || [])] : [])].join(' ').toLowerCase();
  }
  // Selected entries that are gone (removed as missing, say) leave the selection.
  for (const id of [...state.selected]) if (!state.byId.has(id)) state.selected.delete(id);
  updateStateOptions();
  rebuildView();
  renderDashboard();
}

function updateStateOptions() {
  const sel = $('#state-filter');
  const states = [...new Set(state.entries.map((e) => e.state))].sort();
  const extra = ['missing source', 'with errors'];
  const want = ['', ...states, ...extra];
  const have = [...sel.options].map((o) => o.value);
  if (want.join('\n') === have.join('\n')) return;
  const current = sel.value;
  sel.innerHTML = want.map((v) => `<option value="${esc(v)}">${v === '' ? 'All states' : esc(v)}</option>`).join('');
  sel.value = want.includes(current) ? current : '';
}

const SORT_KEYS = {
  source: (e) => primary(e).toLowerCase(),
  target: (e) => targetOf(e).toLowerCase(),
  origin: (e) => e.origin,
  stage: (e) => e.stage ?? -1,
  state: (e) => e.state,
  copied: (e) => e.copied,
  failed: (e) => e.failed,
  skipped: (e) => e.skipped ?? 0,
  size: (e) => e.size ?? 0,
  last_pass: (e) => e.last_pass || '',
  error: (e) => e.error || '',
  refresh: (e) => refreshText(e),
};

function rebuildView() {
  const f = state.filter.trim().toLowerCase();
  const sf = state.stateFilter;
  const keyOf = SORT_KEYS[state.sort.key];
  const dir = state.sort.dir;
  const selectedBefore = state.view[state.cursor]?.id;
  state.view = state.entries.filter((e) => {
    if (f && !e._hay.includes(f)) return false;
    if (sf === 'missing source') return e.missing_source;
    if (sf === 'with errors') return !!e.error || e.failed > 0;
    return !sf || e.state === sf;
  });
  const keyed = state.view.map((e) => [keyOf(e), e]);
  keyed.sort((a, b) => (a[0] < b[0] ? -dir : a[0] > b[0] ? dir : (a[1].id < b[1].id ? -1 : 1)));
  state.view = keyed.map((k) => k[1]);
  state.cursor = selectedBefore ? indexOf(selectedBefore) : null;
  state.anchor = null;
  for (const th of document.querySelectorAll('th[data-sort]')) {
    th.setAttribute('aria-sort', th.dataset.sort === state.sort.key ? (dir > 0 ? 'ascending' : 'descending') : 'none');
  }
  $('#empty').hidden = state.entries.length > 0;
  renderGrid();
}

function indexOf(id) {
  const i = state.view.findIndex((e) => e.id === id);
  return i < 0 ? null : i;
}

function scheduleRender() {
  if (state.renderQueued) return;
  state.renderQueued = true;
  requestAnimationFrame(() => { state.renderQueued = false; renderGrid(); });
}

function stateCell(e) {
  const p = state.progress && state.progress.running && state.progress.entries
    ? state.progress.entries[e.id] : null;
  if (p && (p.state === 'copying' || p.state === 'queued')) {
    const msgs = p.planned_messages ? `${p.copied}/${p.planned_messages}` : '';
    const bar = p.planned_messages
      ? `<progress class="mini" max="${p.planned_messages}" value="${p.copied}"></progress>` : '';
    return `<span class="state state-${p.state}">${esc(p.state)}</span> ${msgs}${bar}`;
  }
  let s = `<span class="state state-${esc(e.state)}">${esc(e.state)}</span>`;
  if (e.missing_source) s += ' <span class="err" title="The source mailbox is missing: removed at the next job edit or migrate">missing</span>';
  return s;
}

// What the last pass adds to its counts (never a failure): the custom keywords the target
// could not store, per folder, and the time waited on throttling servers.
function passNotes(e) {
  const kw = e.keywords_dropped || [];
  const total = kw.reduce((n, k) => n + k.count, 0);
  const notes = [];
  if (total) notes.push(`${total} custom keywords dropped (${kw.map((k) => `${k.folder} ${k.count}`).join(', ')})`);
  if (e.throttled_seconds > 0) notes.push(`waited ${e.throttled_seconds.toFixed(1)} s on throttling`);
  return notes.join('; ');
}
function passNoteHtml(e) {
  const total = (e.keywords_dropped || []).reduce((n, k) => n + k.count, 0);
  const parts = [];
  if (total) parts.push(`<span class="pass-note" data-keywords-dropped="${total}">${total} keywords dropped</span>`);
  if (e.throttled_seconds > 0) parts.push(`<span class="pass-note" data-throttled="${esc(e.throttled_seconds)}">throttled ${esc(e.throttled_seconds.toFixed(1))} s</span>`);
  return parts.join(' · ');
}

function rowHtml(e, i) {
  const sel = state.selected.has(e.id);
  const tgt = targetOf(e);
  const note = !e.target && e.match_note ? ` title="${esc(e.match_note)}"` : '';
  const refresh = state.lastRefresh.get(e.id);
  const icon = Object.fromEntries(RESULTS.map(([k, , i]) => [k, i]));
  const rcell = refresh ? ['source', 'target'].filter((s) => refresh[s])
    .map((s) => `<span class="r-${esc(refresh[s])}" title="${s === 'source' ? 'Source' : 'Target'}: ${esc(RESULT_LABEL[refresh[s]] || refresh[s])}" data-refresh-side="${s}" data-result="${esc(refresh[s])}">${s === 'source' ? 'S' : 'T'} ${icon[refresh[s]] || '?'}</span>`).join(' ') : '';
  return `<tr role="row" data-entry-id="${esc(e.id)}" data-index="${i}" aria-selected="${sel}"${i === state.cursor ? ' class="cursor"' : ''}>`
    + `<td class="check"><input type="checkbox" tabindex="-1"${sel ? ' checked' : ''} aria-label="Select ${esc(primary(e))}"></td>`
    + `<td title="${esc(primary(e))} (${esc(e.source.login)})">${esc(primary(e))}<span class="login">${esc(e.source.login)}</span></td>`
    + `<td${note}>${tgt ? esc(tgt) : '<span class="none">—</span>'}</td>`
    + `<td>${esc(e.origin)}</td>`
    + `<td class="num">${e.stage ?? ''}</td>`
    + `<td data-col="state">${stateCell(e)}</td>`
    + `<td class="num">${e.copied}</td>`
    + `<td class="num">${e.failed ? `<button type="button" class="link err" data-failures="${esc(e.id)}" title="Show the messages not copied" aria-label="${esc(counted(e.failed, 'message', 'messages'))} of ${esc(primary(e))} not copied: show them">${esc(e.failed)}</button>` : 0}</td>`
    + `<td class="num">${e.skipped ?? 0}</td>`
    + `<td class="num" title="${e.size ?? 0} bytes copied">${humanBytes(e.size ?? 0)}</td>`
    + `<td title="${esc(e.last_pass || '')}">${e.last_pass ? esc(shortTime(e.last_pass)) : 'never'}</td>`
    + `<td title="${esc([e.error, passNotes(e)].filter(Boolean).join('; '))}">${e.error ? `<span class="err">${esc(e.error)}</span> ` : ''}${passNoteHtml(e)}</td>`
    + `<td>${rcell}</td></tr>`;
}

// A time of the state (UTC, ISO 8601) as the column has room for, in the browser's time
// zone: "today 22:59", "Dec 6 22:59", or the date of another year. The cell's title keeps
// the stored time whole.
function shortTime(iso) {
  const t = new Date(iso);
  if (Number.isNaN(t.getTime())) return iso.replace('T', ' ').slice(0, 16);
  const now = new Date();
  const hm = `${String(t.getHours()).padStart(2, '0')}:${String(t.getMinutes()).padStart(2, '0')}`;
  if (t.toDateString() === now.toDateString()) return `today ${hm}`;
  if (t.getFullYear() !== now.getFullYear()) return iso.slice(0, 10);
  return `${t.toLocaleDateString('en', { month: 'short', day: 'numeric' })} ${hm}`;
}

function renderGrid() {
  if (document.hidden) { state.drawn = null; return; }
  const grid = $('#grid');
  const n = state.view.length;
  const headH = 32;
  const top = Math.max(0, grid.scrollTop - headH);
  const first = Math.max(0, Math.floor(top / ROW_H) - OVERSCAN);
  const last = Math.min(n, Math.ceil((top + grid.clientHeight) / ROW_H) + OVERSCAN);
  const rows = [];
  for (let i = first; i < last; i += 1) rows.push(rowHtml(state.view[i], i));
  const body = $('#rows');
  const d = state.drawn;
  if (d && d.first === first && d.last === last && d.n === n) {
    // The same window: replace only the rows whose HTML changed.
    const trs = body.children; // spacer, rows…, spacer
    for (let k = 0; k < rows.length; k += 1) {
      if (rows[k] !== d.rows[k]) trs[k + 1].outerHTML = rows[k];
    }
  } else {
    body.innerHTML = `<tr class="spacer" aria-hidden="true"><td colspan="13"></td></tr>${rows.join('')}`
      + '<tr class="spacer" aria-hidden="true"><td colspan="13"></td></tr>';
    // Heights through the CSSOM: the page's policy forbids inline style attributes.
    const spacers = body.querySelectorAll('tr.spacer');
    spacers[0].style.height = `${first * ROW_H}px`;
    spacers[1].style.height = `${(n - last) * ROW_H}px`;
  }
  state.drawn = { first, last, n, rows };
  const visibleSelected = state.view.reduce((k, e) => k + (state.selected.has(e.id) ? 1 : 0), 0);
  const all = $('#select-all');
  const allChecked = n > 0 && visibleSelected === n;
  const some = visibleSelected > 0 && visibleSelected < n;
  if (all.checked !== allChecked) all.checked = allChecked;
  if (all.indeterminate !== some) all.indeterminate = some;
  const count = state.selected.size;
  const text = `${count} of ${state.entries.length} selected`
    + (n !== state.entries.length ? ` · ${n} shown` : '');
  const counter = $('#selection-count');
  if (counter.textContent !== text) counter.textContent = text;
}

// ------------------------------------------------------------------ selection

function selectOnly(i) {
  state.selected = new Set([state.view[i].id]);
  state.anchor = i;
  state.cursor = i;
}
function toggle(i) {
  const id = state.view[i].id;
  if (state.selected.has(id)) state.selected.delete(id); else state.selected.add(id);
  state.anchor = i;
  state.cursor = i;
}
function selectRange(from, to, add) {
  if (!add) state.selected = new Set();
  const [a, b] = from <= to ? [from, to] : [to, from];
  for (let k = a; k <= b; k += 1) state.selected.add(state.view[k].id);
  state.cursor = to;
}
function selectAllShown() {
  for (const e of state.view) state.selected.add(e.id);
  renderGrid();
}
function selectedIds() {
  // In the grid's order, so that actions list the mailboxes as the admin sees them.
  const ids = state.view.filter((e) => state.selected.has(e.id)).map((e) => e.id);
  // A set: with 10,000 selected, includes() on the list would be 50 million comparisons.
  const listed = new Set(ids);
  for (const id of state.selected) if (!listed.has(id)) ids.push(id);
  return ids;
}

function onRowClick(ev) {
  const tr = ev.target.closest('tr[data-entry-id]');
  if (!tr) return;
  // The failed count opens its messages and leaves the selection as it is.
  const failures = ev.target.closest('button[data-failures]');
  if (failures) { openFailures(failures.dataset.failures); return; }
  const i = Number(tr.dataset.index);
  const isBox = ev.target.matches('input[type="checkbox"]');
  if (ev.shiftKey && state.anchor !== null) {
    selectRange(state.anchor, i, ev.ctrlKey || ev.metaKey);
  } else if (isBox || ev.ctrlKey || ev.metaKey) {
    toggle(i);
  } else {
    selectOnly(i);
  }
  // The click may have ticked the row's checkbox itself: draw every row from the state.
  state.drawn = null;
  renderGrid();
  $('#grid').focus({ preventScroll: true });
}

function onGridKey(ev) {
  const n = state.view.length;
  if (!n) return;
  if (ev.key === 'ArrowDown' || ev.key === 'ArrowUp') {
    ev.preventDefault();
    const from = state.cursor ?? (ev.key === 'ArrowDown' ? -1 : n);
    const to = Math.min(n - 1, Math.max(0, from + (ev.key === 'ArrowDown' ? 1 : -1)));
    if (ev.shiftKey) {
      if (state.anchor === null) state.anchor = from < 0 || from >= n ? to : from;
      selectRange(state.anchor, to, false);
    } else {
      selectOnly(to);
    }
    scrollToRow(to);
    renderGrid();
  } else if (ev.key === ' ' && state.cursor !== null) {
    ev.preventDefault();
    toggle(state.cursor);
    renderGrid();
  }
}

function scrollToRow(i) {
  const grid = $('#grid');
  const y = 32 + i * ROW_H;
  if (y < grid.scrollTop + 32) grid.scrollTop = y - 32;
  else if (y + ROW_H > grid.scrollTop + grid.clientHeight) grid.scrollTop = y + ROW_H - grid.clientHeight;
}

// ------------------------------------------------------------------ tabs

// Draws what changed while its panel was hidden (or the page was in the background).
function catchUp() {
  if (state.stale.dashboard) renderDashboard();
  if (state.stale.progress) renderProgress();
}

function showTab(name) {
  for (const tab of document.querySelectorAll('[role="tab"]')) {
    const on = tab.dataset.panel === name;
    tab.setAttribute('aria-selected', String(on));
    tab.tabIndex = on ? 0 : -1;
    $(`#panel-${tab.dataset.panel}`).hidden = !on;
  }
  if (name === 'jobs') scheduleRender();
  if (name === 'dashboard') catchUp();
  if (name === 'connections') loadForms().catch((e) => say(e.message, 'error'));
  if (name === 'reports') loadReports();
}

function loadReports() {
  // A fresh load each time: the reports change with every pass and refresh.
  showReport('migration', null);
  showReport('refresh', null);
  loadRuns();
}

// The report of one run (null: the latest) in its block, with its CSV and JSON links.
function showReport(kind, run, started) {
  const q = run === null ? '' : `&run=${run}`;
  const csv = kind === 'migration' ? '#migration-csv' : '#refresh-report-csv';
  const json = kind === 'migration' ? '#migration-json' : '#refresh-report-json';
  $(`#report-${kind}`).src = `/api/reports/${kind}?format=html${q}&t=${Date.now()}`;
  $(csv).href = `/api/reports/${kind}?format=csv&download=1${q}`;
  $(json).href = `/api/reports/${kind}?format=json&download=1${q}`;
  const name = kind === 'migration' ? 'Migration report' : 'Refresh email addresses report';
  $(`#${kind}-report-title`).textContent = run === null ? `${name} (latest)` : `${name}: run ${run}, ${started}`;
  for (const tr of document.querySelectorAll('#runs tbody tr')) {
    const mine = tr.dataset.kind === kind;
    if (mine) tr.classList.toggle('shown', run !== null && Number(tr.dataset.run) === run);
  }
}

async function loadRuns() {
  let v;
  try { v = await api('GET', '/api/runs'); } catch (e) { say(e.message, 'error'); return; }
  const when = (t) => (t ? esc(t.replace('T', ' ').slice(0, 19)) : '');
  $('#runs tbody').innerHTML = v.runs.map((r) => `<tr data-kind="${esc(r.kind)}" data-run="${r.run}">`
    + `<td>${r.run}</td><td>${r.kind === 'migration' ? 'Migration' : 'Refresh email addresses'}</td>`
    + `<td>${when(r.started)}</td><td>${r.kind === 'migration' ? (r.finished ? when(r.finished) : 'not finished') : ''}</td>`
    + `<td class="num">${r.entries ?? ''}</td><td class="num">${r.copied ?? ''}</td><td class="num">${r.failed ?? ''}</td>`
    + `<td><button type="button" class="link" data-show-run="${r.run}" data-show-kind="${esc(r.kind)}" data-started="${when(r.started)}">Show</button></td></tr>`).join('');
  $('#runs-empty').hidden = v.runs.length > 0;
}

// ------------------------------------------------------------------ dashboard

function renderConnections(job) {
  $('#job-name').textContent = job.name;
  document.title = `mailferry: ${job.name}`;
  const rows = ['source', 'target'].map((side) => {
    const c = job.connections[side];
    const where = c.kind === 'imap' ? `${esc(c.host)}:${c.port}` : esc(c.host || '');
    return `<tr><th>${side === 'source' ? 'Source' : 'Target'}</th><td>${esc(c.kind)}</td><td>${where}</td>`
      + `<td>${c.directory ? `directory ${esc(c.directory)}` : '<span class="none">no directory</span>'}</td></tr>`;
  });
  $('#connections tbody').innerHTML = rows.join('');
  renderCheck(job.last_check);
}

function panelShown(name) {
  return !$(`#panel-${name}`).hidden && !document.hidden;
}

function renderDashboard() {
  if (!panelShown('dashboard')) { state.stale.dashboard = true; return; }
  state.stale.dashboard = false;
  const list = state.entries;
  const migrated = list.filter((e) => e.state === 'migrated');
  const failed = list.filter((e) => e.state === 'failed' || e.state === 'partial' || e.error);
  const missing = list.filter((e) => e.missing_source);
  // Logins refused: expired or changed passwords, tokens or app permissions.
  const refusedLogin = /AUTHENTICATIONFAILED|authentication failed|invalid credentials|AADSTS|expired/i;
  const credentials = failed.filter((e) => e.error && refusedLogin.test(e.error));
  const unmatched = list.filter((e) => e.origin === 'unmatched');
  $('#good-summary').textContent = `${migrated.length} of ${counted(list.length, 'mailbox', 'mailboxes')} migrated`;
  $('#good').innerHTML = migrated.slice(0, 50).map((e) => `<li>${esc(primary(e))} → ${esc(targetOf(e))}: ${counted(e.copied, 'message', 'messages')}</li>`).join('')
    + (migrated.length > 50 ? `<li>… and ${migrated.length - 50} more</li>` : '');
  const bad = failed.length + missing.length;
  $('#bad-summary').textContent = bad === 0 ? 'Nothing has failed'
    : `${failed.length} failed${credentials.length ? ` (${credentials.length} refused the login)` : ''}, ${missing.length} missing`;
  $('#bad').innerHTML = [
    ...(credentials.length ? [`<li><strong>${counted(credentials.length, 'mailbox', 'mailboxes')} refused the login</strong>: expired or changed credentials (a password, a token, an app's permission); fix them, then Start migration again</li>`] : []),
    ...failed.slice(0, 50).map((e) => `<li><strong>${esc(primary(e))}</strong>: ${esc(e.state)}${e.failed ? `, ${counted(e.failed, 'message', 'messages')} not copied` : ''}${e.error ? ` — ${esc(e.error)}` : ''}</li>`),
    ...missing.slice(0, 50).map((e) => `<li><strong>${esc(primary(e))}</strong>: the source mailbox is missing (removed at the next job edit or migrate)</li>`),
    ...(unmatched.length ? [`<li>${unmatched.length === 1 ? '1 mailbox has' : `${unmatched.length} mailboxes have`} no target yet (Match)</li>`] : []),
  ].join('');
}

// Seconds left at this rate, in words; empty when it cannot be told.
function eta(left, rate) {
  if (!rate || left <= 0) return '';
  const s = Math.ceil(left / rate);
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}

function renderProgress() {
  if (!panelShown('dashboard')) { state.stale.progress = true; return; }
  state.stale.progress = false;
  const p = state.progress;
  if (!p || !p.entries || Object.keys(p.entries).length === 0) return;
  const o = p.overall;
  const pct = o.planned_bytes ? Math.floor((100 * o.bytes) / o.planned_bytes) : (p.running ? 0 : 100);
  $('#overall').innerHTML = `<div>${p.running ? 'Migrating' : 'Last pass finished'}: ${o.done} of ${counted(o.mailboxes, 'mailbox', 'mailboxes')}, `
    + `${o.copied} of ${counted(o.planned_messages, 'message', 'messages')}, ${humanBytes(o.bytes)} of ${humanBytes(o.planned_bytes)}`
    + `${p.running && o.rate ? `, ${humanBytes(o.rate)}/s` : ''}`
    + `${p.running && eta(o.planned_bytes - o.bytes, o.rate) ? `, about ${eta(o.planned_bytes - o.bytes, o.rate)} left` : ''}`
    + `${p.error ? ` — <span class="err">${esc(p.error)}</span>` : ''}</div>`
    + `<progress id="overall-bar" max="100" value="${pct}" aria-label="Overall progress">${pct}%</progress>`;
  const rows = Object.entries(p.entries).map(([id, e]) => {
    const entry = state.byId.get(id);
    return `<tr data-progress-id="${esc(id)}"><td>${esc(entry ? primary(entry) : id)}</td><td><span class="state state-${esc(e.state)}">${esc(e.state)}</span></td>`
      + `<td>${e.copied}/${e.planned_messages}</td><td>${humanBytes(e.bytes)}</td><td>${e.rate ? `${humanBytes(e.rate)}/s` : ''}</td>`
      + `<td>${esc(eta(e.planned_bytes - e.bytes, e.rate))}</td></tr>`;
  });
  $('#running tbody').innerHTML = rows.join('');
}

// ------------------------------------------------------------------ actions

function needSelection(what) {
  const ids = selectedIds();
  if (ids.length === 0) {
    say(`Select the mailboxes to ${what} first: click a row, Ctrl+click or Shift+click for more, Ctrl+A for all shown`, 'error');
    showTab('jobs');
    return null;
  }
  return ids;
}

async function busy(button, work) {
  if (button.getAttribute('aria-busy') === 'true') return;
  button.setAttribute('aria-busy', 'true');
  try {
    await work();
  } catch (e) {
    say(e.message, 'error');
  } finally {
    button.removeAttribute('aria-busy');
  }
}

async function reloadEntries() {
  const v = await api('GET', '/api/entries');
  setEntries(v.entries);
}

// The last Check connections (of this console), under the connections on the Dashboard.
function renderCheck(last) {
  if (!last) return;
  const v = last.result;
  const html = v.servers.map((s) => s.checks.map((c) => `<tr><th>${esc(s.side)}</th>`
    + `<td class="${c.ok ? 'okay' : 'fail'}">${c.ok ? 'OK' : 'FAIL'}</td><td>${esc(c.check)}</td><td>${esc(c.detail)}</td></tr>`).join('')).join('');
  $('#check-results').innerHTML = `<p class="hint" id="check-when">Last checked ${esc(last.at.replace('T', ' ').slice(0, 19))}: `
    + `${v.ok ? 'every connection works' : '<span class="err">some connections do not work</span>'}</p>`
    + `<table class="plain" id="check-table"><tbody>${html}</tbody></table>`;
}

async function checkConnections(btn) {
  await busy(btn, async () => {
    say('Checking the connections…');
    const v = await api('POST', '/api/check');
    renderCheck({ at: new Date().toISOString(), result: v });
    say(v.ok ? 'All connections work' : 'Some connections do not work: see the Dashboard', v.ok ? 'ok' : 'error');
    showTab('dashboard');
  });
}

async function startMigration(btn) {
  const ids = needSelection('migrate');
  if (!ids) return;
  await busy(btn, async () => {
    const v = await api('POST', '/api/migrate', { ids });
    say(v.message || `Migration started for ${counted(ids.length, 'mailbox', 'mailboxes')}`, 'ok');
    // Show the queued rows at once rather than at the event stream's next tick.
    state.progress = await api('GET', '/api/progress');
    renderProgress();
    scheduleRender();
  });
}

async function stopMigration(btn) {
  await busy(btn, async () => {
    const v = await api('POST', '/api/stop');
    say(v.message || 'Stopping', 'ok');
  });
}

async function refreshAddresses(btn) {
  const ids = needSelection('refresh');
  if (!ids) return;
  await busy(btn, async () => {
    say(`Refreshing the addresses of ${counted(ids.length, 'mailbox', 'mailboxes')}…`);
    const v = await api('POST', '/api/refresh', { ids });
    rememberRefresh(v);
    await reloadEntries();
    say('Addresses refreshed', 'ok');
    openRefreshDialog(v);
  });
}

function rememberRefresh(v) {
  state.lastRefresh = new Map();
  for (const m of v.mailboxes || []) {
    const r = state.lastRefresh.get(m.entry) || {};
    r[m.side] = m.result;
    state.lastRefresh.set(m.entry, r);
  }
}

function openRefreshDialog(v) {
  for (const side of ['source', 'target']) {
    const s = v[side];
    const body = document.querySelector(`#refresh-dialog [data-side="${side}"] .side-body`);
    if (!s.available) {
      body.innerHTML = `<p class="reason" data-reason>⚠ Not refreshed: ${esc(s.reason)}</p>`;
      continue;
    }
    const rows = RESULTS.filter(([, , , sides]) => sides.includes(side)).map(([key, label, icon]) => {
      const n = s.counts[key] ?? 0;
      const who = (v.mailboxes || []).filter((m) => m.side === side && m.result === key)
        .map((m) => { const e = state.byId.get(m.entry); return e ? primary(e) : m.entry; });
      const title = who.length ? ` title="${esc(who.slice(0, 30).join(', '))}${who.length > 30 ? ', …' : ''}"` : '';
      return `<tr data-result="${key}"${title}><td class="icon ${key}" aria-hidden="true">${icon}</td>`
        + `<td>${esc(label)}</td><td class="count" data-count="${key}">${n}</td></tr>`;
    });
    body.innerHTML = `<table class="results"><tbody>${rows.join('')}</tbody></table>`;
  }
  const removed = v.removed_next || [];
  const box = $('#removed-next');
  box.hidden = removed.length === 0;
  box.innerHTML = removed.length
    ? `<strong>Removed at the next migrate or job edit</strong> (their source mailbox is missing): `
      + removed.map((id) => { const e = state.byId.get(id); return `<span data-removed="${esc(id)}">${esc(e ? `${primary(e)} (${id})` : id)}</span>`; }).join(', ')
    : '';
  openDialog('#refresh-dialog', '#close-refresh');
}

let lastFocus = null;
function openDialog(sel, focusSel) {
  lastFocus = document.activeElement;
  for (const d of document.querySelectorAll('.dialog')) d.hidden = true;
  $('#overlay').hidden = false;
  $(sel).hidden = false;
  $(focusSel).focus();
}
function closeDialog() {
  $('#overlay').hidden = true;
  for (const d of document.querySelectorAll('.dialog')) d.hidden = true;
  if (lastFocus) lastFocus.focus();
}

// The drill-down behind a failed count: every message of the entry that the latest migration
// could not copy, with the server's words (all escaped: they come from a server).
async function openFailures(id) {
  const e = state.byId.get(id);
  const who = e ? `${primary(e)} (${id})` : id;
  let v;
  try {
    v = await api('GET', `/api/failures?id=${encodeURIComponent(id)}`);
  } catch (err) {
    say(err.message, 'error');
    return;
  }
  const list = v.failures || [];
  $('#failures-title').textContent = `Messages not copied — ${who}`;
  $('#failures-what').textContent = `The latest migration could not copy ${counted(list.length, 'message', 'messages')} of this mailbox:`;
  $('#failures-table tbody').innerHTML = list.map((f) => `<tr data-uid="${esc(f.uid ?? '')}">`
    + `<td>${esc(f.folder)}</td><td class="num">${f.uid === null || f.uid === undefined ? '—' : esc(f.uid)}</td>`
    + `<td class="num">${f.size === null || f.size === undefined ? '—' : esc(humanBytes(f.size))}</td>`
    + `<td class="msgid">${esc(f.message_id ?? '—')}</td><td class="words">${esc(f.reason)}</td></tr>`).join('');
  $('#failures-table').hidden = list.length === 0;
  $('#failures-what').hidden = list.length === 0;
  $('#failures-none').hidden = list.length > 0;
  openDialog('#failures-dialog', '#close-failures');
}

function openMatch() {
  const ids = needSelection('match');
  if (!ids) return;
  const names = ids.slice(0, 5).map((id) => primary(state.byId.get(id))).join(', ');
  $('#match-what').textContent = `${ids.length} selected: ${names}${ids.length > 5 ? ', …' : ''}`;
  $('#match-set-row').hidden = ids.length !== 1;
  $('#match-address').value = '';
  openDialog('#match-dialog', '#match-auto');
}

async function matchAction(btn, path, body, done) {
  await busy(btn, async () => {
    const v = await api('POST', path, body);
    await reloadEntries();
    closeDialog();
    say(done(v), 'ok');
  });
}

async function createMailboxes(btn) {
  await busy(btn, async () => {
    say('Creating the target mailboxes that wait for creation…');
    const v = await api('POST', '/api/create');
    await reloadEntries();
    const failed = (v.entries || []).filter((e) => e.error);
    say(`${counted(v.created, 'mailbox', 'mailboxes')} created, ${v.failed} failed${failed.length ? `: ${failed.map((e) => `${e.id}: ${e.error}`).join('; ')}` : ''}`,
      v.failed ? 'error' : 'ok');
  });
}

// ------------------------------------------------------------------ connection forms

// The forms are drawn from /api/connections; a form being edited is not drawn again under the
// admin's hands, only after its Save or Undo.
const forms = { view: null, dirty: new Set() };
// A directory's own application ([side.directory.oauth2]) is there for a Graph directory only.
const FORM_ORDER = ['source', 'target', 'source.oauth2', 'target.oauth2', 'source.directory',
  'source.directory.oauth2', 'target.directory', 'target.directory.oauth2', 'target.create'];

function fieldId(f) {
  return `f-${f.key.replace(/[^a-z0-9_]/gi, '-')}`;
}

function fieldControl(f) {
  const id = fieldId(f);
  const v = f.value;
  const common = `id="${id}" name="${esc(f.name)}" aria-describedby="${id}-error"`;
  if (f.input === 'choice') {
    const cur = typeof v === 'string' ? v : '';
    const options = ['', ...f.choices];
    if (cur && !options.includes(cur)) options.push(cur);
    return `<select ${common}>${options.map((o) => `<option value="${esc(o)}"${o === cur ? ' selected' : ''}>`
      + `${o === '' ? `default: ${esc(f.hint)}` : esc(o)}</option>`).join('')}</select>`;
  }
  if (f.input === 'boolean') {
    const cur = v === true ? 'true' : v === false ? 'false' : '';
    return `<select ${common}>${[['', `default: ${f.hint}`], ['true', 'true'], ['false', 'false']]
      .map(([o, label]) => `<option value="${o}"${o === cur ? ' selected' : ''}>${esc(label)}</option>`).join('')}</select>`;
  }
  if (f.input === 'secret') {
    const how = v && typeof v === 'object' && 'file' in v ? 'file' : 'env';
    const ref = v && typeof v === 'object' ? (v.env ?? v.file ?? '') : '';
    const opt = (k, label) => `<option value="${k}"${how === k ? ' selected' : ''}>${label}</option>`;
    return `<div class="secret"><select name="${esc(f.name)}:how" aria-label="${esc(f.label)}: where it is">`
      + `${opt('env', 'Variable')}${opt('file', 'File')}</select>`
      + `<input type="text" ${common} value="${esc(ref)}" placeholder="${how === 'file' ? 'path of the file' : 'VARIABLE_NAME'}" autocomplete="off" spellcheck="false"></div>`;
  }
  const text = v === null || v === undefined ? '' : Array.isArray(v) ? v.join(', ') : String(v);
  return `<input type="text" ${common} value="${esc(text)}" placeholder="${esc(f.hint)}"`
    + `${f.input === 'number' ? ' inputmode="numeric"' : ''} autocomplete="off" spellcheck="false">`;
}

function fieldHtml(f) {
  const id = fieldId(f);
  const error = `<p class="field-error" id="${id}-error"></p>`;
  if (f.input === 'flag') {
    return `<div class="field flag" data-field="${esc(f.key)}"><label><input type="checkbox" id="${id}" name="${esc(f.name)}"`
      + ` aria-describedby="${id}-error"${f.value === true ? ' checked' : ''}>${esc(f.label)} <code>${esc(f.name)}</code></label>${error}</div>`;
  }
  return `<div class="field" data-field="${esc(f.key)}"><label for="${id}" title="${esc(f.label)}: ${esc(f.key)}">${esc(f.label)} <code>${esc(f.name)}</code></label>`
    + `${fieldControl(f)}${error}</div>`;
}

function formHtml(s) {
  const graph = s.kind === 'graph';
  const needs = s.section === 'target.create'
    ? (graph ? 'domain, licence, usage location and the initial password' : 'base, domain and the initial password')
    : s.section.endsWith('.directory.oauth2') ? 'the tenant, client ID and secret (else the connection\'s own application is used)'
      : s.section.endsWith('.oauth2') ? `the flow and its keys, with auth = "oauth2" in [${s.section.split('.')[0]}],`
        : 'URL, bind DN, bind password and base';
  const note = s.present ? ''
    : `<p class="form-note">Not in the job file yet: fill in ${needs} to add [${esc(s.section)}].</p>`;
  return `<div class="form-head"><h2>${esc(s.title)}</h2><code>[${esc(s.section)}]</code>`
    + `${s.kind ? `<span class="kind">${esc(s.kind)}</span>` : ''}</div>${note}`
    + `<div class="fields">${s.fields.map(fieldHtml).join('')}</div>`
    + '<div class="form-problems" hidden></div>'
    + '<div class="form-actions"><button type="submit" class="primary">Save</button>'
    + '<button type="button" data-action="undo">Undo changes</button><span class="form-status" role="status"></span></div>';
}

function renderForm(section) {
  const s = forms.view.sections.find((x) => x.section === section);
  let form = document.querySelector(`form.conn-form[data-section="${section}"]`);
  if (!s) { if (form) form.remove(); return; }
  if (!form) {
    form = document.createElement('form');
    form.className = 'card conn-form';
    form.dataset.section = section;
    form.noValidate = true;
    form.addEventListener('submit', (ev) => { ev.preventDefault(); saveForm(form); });
    form.addEventListener('input', () => forms.dirty.add(section));
    form.addEventListener('change', (ev) => {
      forms.dirty.add(section);
      // The reference's placeholder follows its kind.
      if (ev.target.name && ev.target.name.endsWith(':how')) {
        const input = form.elements.namedItem(ev.target.name.slice(0, -4));
        input.placeholder = ev.target.value === 'file' ? 'path of the file' : 'VARIABLE_NAME';
      }
    });
    form.addEventListener('click', (ev) => {
      if (ev.target.dataset.action === 'undo') { forms.dirty.delete(section); renderForm(section); }
    });
    $('#conn-forms').append(form);
  }
  form.innerHTML = formHtml(s);
}

async function loadForms(force = false) {
  forms.view = await api('GET', '/api/connections');
  $('#job-path').textContent = forms.view.path;
  for (const section of FORM_ORDER) {
    if (force || !forms.dirty.has(section)) renderForm(section);
  }
}

function formValues(form, s) {
  const out = {};
  for (const f of s.fields) {
    const el = form.elements.namedItem(f.name);
    if (f.input === 'flag') {
      out[f.name] = el.checked;
    } else if (f.input === 'secret') {
      const ref = el.value.trim();
      out[f.name] = ref ? { [form.elements.namedItem(`${f.name}:how`).value]: ref } : null;
    } else {
      const t = el.value.trim();
      out[f.name] = t === '' ? null : t;
    }
  }
  return out;
}

function clearProblems(form) {
  for (const field of form.querySelectorAll('.field.invalid')) field.classList.remove('invalid');
  for (const e of form.querySelectorAll('.field-error')) e.textContent = '';
  for (const e of form.querySelectorAll('[aria-invalid]')) e.removeAttribute('aria-invalid');
  const box = form.querySelector('.form-problems');
  box.hidden = true;
  box.innerHTML = '';
}

function showProblems(form, problems) {
  const general = [];
  let first = null;
  for (const p of problems) {
    const field = p.field ? form.querySelector(`.field[data-field="${CSS.escape(p.field)}"]`) : null;
    if (!field) { general.push(p.field ? `${p.field}: ${p.message}` : p.message); continue; }
    field.classList.add('invalid');
    const error = field.querySelector('.field-error');
    error.textContent = error.textContent ? `${error.textContent}; ${p.message}` : p.message;
    const input = field.querySelector('input[type="text"], select, input');
    input.setAttribute('aria-invalid', 'true');
    first = first || input;
  }
  const box = form.querySelector('.form-problems');
  box.hidden = general.length === 0;
  box.innerHTML = general.length ? `<ul>${general.map((g) => `<li>${esc(g)}</li>`).join('')}</ul>` : '';
  if (first) first.focus();
}

async function saveForm(form) {
  const section = form.dataset.section;
  const s = forms.view.sections.find((x) => x.section === section);
  const status = form.querySelector('.form-status');
  clearProblems(form);
  status.textContent = '';
  await busy(form.querySelector('button[type="submit"]'), async () => {
    let v;
    try {
      v = await api('POST', '/api/reconfigure', { section, fields: formValues(form, s) });
    } catch (e) {
      if (!e.body || !Array.isArray(e.body.problems)) throw e;
      showProblems(form, e.body.problems);
      status.textContent = 'Not saved';
      status.className = 'form-status error';
      say(e.message, 'error');
      return;
    }
    forms.dirty.delete(section);
    await loadForms();
    const saved = form.querySelector('.form-status');
    saved.textContent = v.changed.length ? `Saved: ${v.changed.join(', ')}` : 'Nothing to change';
    saved.className = 'form-status ok';
    say(v.message, 'ok');
    renderConnections(await api('GET', '/api/job'));
  });
}

// ------------------------------------------------------------------ live updates

function listen() {
  // Marks for the benchmark (bench/web.sh reads them): when the stream was opened, when the
  // first entries arrived and when they were drawn.
  performance.mark('mf-listen');
  const es = new EventSource('/api/events');
  es.addEventListener('progress', (ev) => {
    state.progress = JSON.parse(ev.data);
    renderProgress();
    if (state.progress.running) scheduleRender();
  });
  es.addEventListener('entries', (ev) => {
    performance.mark('mf-entries-received');
    setEntries(JSON.parse(ev.data).entries);
    performance.mark('mf-entries-drawn');
    firstEntries.resolve();
  });
  // After the first full list the stream sends only the entries that changed.
  es.addEventListener('entries-changed', (ev) => {
    const d = JSON.parse(ev.data);
    const gone = new Set(d.removed);
    const fresh = new Map(d.changed.map((e) => [e.id, e]));
    const list = state.entries.filter((e) => !gone.has(e.id)).map((e) => fresh.get(e.id) || e);
    for (const e of list) fresh.delete(e.id);
    setEntries(list.concat([...fresh.values()]));
  });
  es.addEventListener('failure', (ev) => say(JSON.parse(ev.data).error, 'error'));
  // EventSource reconnects by itself; nothing to do on error but say so once.
  es.onerror = () => { if (es.readyState === EventSource.CONNECTING) say('Connection to mailferry lost; retrying…', 'error'); };
  es.onopen = () => { if ($('#message').textContent.startsWith('Connection to mailferry lost')) say(''); };
}

// ------------------------------------------------------------------ wiring

function wire() {
  $('#runs').addEventListener('click', (ev) => {
    const b = ev.target.closest('button[data-show-run]');
    if (b) showReport(b.dataset.showKind, Number(b.dataset.showRun), b.dataset.started);
  });
  $('#rows').addEventListener('mousedown', (ev) => { if (ev.shiftKey) ev.preventDefault(); });
  $('#rows').addEventListener('click', onRowClick);
  $('#grid').addEventListener('scroll', scheduleRender, { passive: true });
  // A page in the background draws nothing; brought back, it draws what it missed.
  document.addEventListener('visibilitychange', () => {
    if (document.hidden) return;
    scheduleRender();
    catchUp();
  });
  $('#grid').addEventListener('keydown', onGridKey);
  window.addEventListener('resize', scheduleRender);
  $('#select-all').addEventListener('change', (ev) => {
    if (ev.target.checked) selectAllShown();
    else { for (const e of state.view) state.selected.delete(e.id); renderGrid(); }
  });
  for (const th of document.querySelectorAll('th[data-sort]')) {
    th.querySelector('button').addEventListener('click', () => {
      const key = th.dataset.sort;
      state.sort = { key, dir: state.sort.key === key ? -state.sort.dir : 1 };
      rebuildView();
    });
  }
  $('#filter').addEventListener('input', (ev) => { state.filter = ev.target.value; rebuildView(); });
  $('#state-filter').addEventListener('change', (ev) => { state.stateFilter = ev.target.value; rebuildView(); });
  document.addEventListener('keydown', (ev) => {
    if (ev.key === 'Escape' && !$('#overlay').hidden) { closeDialog(); return; }
    const t = ev.target;
    const typing = (t.tagName === 'INPUT' && t.type !== 'checkbox') || t.tagName === 'TEXTAREA' || t.tagName === 'SELECT';
    if ((ev.ctrlKey || ev.metaKey) && (ev.key === 'a' || ev.key === 'A') && !typing && $('#overlay').hidden) {
      ev.preventDefault();
      showTab('jobs');
      selectAllShown();
    }
  });
  const tabs = [...document.querySelectorAll('[role="tab"]')];
  for (const tab of tabs) {
    tab.addEventListener('click', () => showTab(tab.dataset.panel));
    tab.addEventListener('keydown', (ev) => {
      const k = tabs.indexOf(tab);
      const next = ev.key === 'ArrowRight' ? tabs[(k + 1) % tabs.length] : ev.key === 'ArrowLeft' ? tabs[(k + tabs.length - 1) % tabs.length] : null;
      if (next) { ev.preventDefault(); showTab(next.dataset.panel); next.focus(); }
    });
  }
  $('#btn-check').addEventListener('click', (ev) => checkConnections(ev.currentTarget));
  $('#btn-migrate').addEventListener('click', (ev) => startMigration(ev.currentTarget));
  $('#btn-stop').addEventListener('click', (ev) => stopMigration(ev.currentTarget));
  $('#btn-refresh').addEventListener('click', (ev) => refreshAddresses(ev.currentTarget));
  $('#btn-match').addEventListener('click', openMatch);
  $('#btn-create').addEventListener('click', (ev) => createMailboxes(ev.currentTarget));
  $('#btn-reports').addEventListener('click', () => showTab('reports'));
  $('#open-connections').addEventListener('click', () => showTab('connections'));
  $('#close-refresh').addEventListener('click', closeDialog);
  $('#close-match').addEventListener('click', closeDialog);
  $('#close-failures').addEventListener('click', closeDialog);
  $('#open-report').addEventListener('click', () => { window.open('/api/reports/refresh?format=html', '_blank', 'noopener'); });
  $('#match-auto').addEventListener('click', (ev) => matchAction(ev.currentTarget, '/api/match', { ids: selectedIds() },
    (v) => `Automatic matching: ${(v.auto?.matched || []).length} matched, ${(v.auto?.unmatched || []).length} left unmatched`));
  $('#match-set').addEventListener('click', (ev) => {
    const [id] = selectedIds();
    const address = $('#match-address').value.trim();
    matchAction(ev.currentTarget, '/api/match', { id, address }, () => `Matched manually to ${address}`);
  });
  $('#match-create').addEventListener('click', (ev) => matchAction(ev.currentTarget, '/api/match-create', { ids: selectedIds() },
    (v) => `${counted((v.to_create || []).length, 'mailbox', 'mailboxes')} will be created on the target (Create mailboxes)`));
  $('#match-stage-set').addEventListener('click', (ev) => {
    const stage = Number($('#match-stage').value);
    if (!Number.isInteger(stage) || stage < 0 || $('#match-stage').value.trim() === '') { say('Give the stage as a whole number', 'error'); return; }
    matchAction(ev.currentTarget, '/api/stage', { ids: selectedIds(), stage },
      () => `${counted(selectedIds().length, 'mailbox', 'mailboxes')} put in stage ${stage}`);
  });
  $('#match-skip').addEventListener('click', (ev) => matchAction(ev.currentTarget, '/api/skip', { ids: selectedIds() },
    (v) => `${counted((v.skipped || []).length, 'mailbox', 'mailboxes')} will not be migrated`));
}

// Resolved when the first entries are drawn: what the grid can do without waits until then.
const firstEntries = {};
firstEntries.drawn = new Promise((resolve) => { firstEntries.resolve = resolve; });

async function start() {
  wire();
  // The event stream's first tick carries the entries: fetching them as well would send,
  // parse and draw 10,000 entries twice before the grid answers a click.
  listen();
  try {
    renderConnections(await api('GET', '/api/job'));
  } catch (e) {
    say(e.message, 'error');
  }
  // The last refresh's results per row (a report of two lines per entry: 4 MB for 10,000)
  // wait until the grid is drawn and answers clicks, rather than compete with its entries.
  await firstEntries.drawn;
  try {
    rememberRefresh(await api('GET', '/api/reports/refresh?format=json'));
    scheduleRender();
  } catch (_) {
    // No refresh has run yet: the column stays empty.
  }
}

document.addEventListener('DOMContentLoaded', start);
