// RunnerHub dashboard: plain JavaScript modules, no build step, nothing from elsewhere.
// Every request carries the token in the Authorization header; the token lives in this
// tab's sessionStorage only. Text from the API is set with textContent, never as HTML.
import { intakeChart, lagChart, rateChart, waitChart } from './charts.js';
import { LiveStream } from './stream.js';

const TOKEN_KEY = 'runnerhub.token';
const CLUSTER_MS = 1500; // the fallback poll that shows a new leader without the stream
const HEALTH_MS = 5000;
const WORK_MS = 5000;
const SLOW_MS = 15000;
const MAX_EVENTS = 200;

const state = {
  token: null, role: null, who: null, view: 'cluster', jobId: null,
  cluster: null, health: null, stream: null, timers: [], events: [], refreshing: {},
};

const $ = (id) => document.getElementById(id);

class HttpError extends Error {
  constructor(status, detail) {
    super(`${status}: ${detail}`);
    this.status = status;
    this.detail = detail;
  }
}

async function api(path, { method = 'GET', body, token = state.token, accept = [] } = {}) {
  const headers = { Authorization: `Bearer ${token}` };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const r = await fetch(path, {
    method, headers, cache: 'no-store', credentials: 'omit',
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  let data = null;
  try { data = await r.json(); } catch (e) { data = null; }
  if (!r.ok && !accept.includes(r.status)) {
    const detail = data && data.detail !== undefined
      ? (typeof data.detail === 'string' ? data.detail : JSON.stringify(data.detail))
      : r.statusText;
    if (r.status === 401 && token === state.token && state.token) signOut(`signed out: ${detail}`);
    throw new HttpError(r.status, detail);
  }
  return data;
}

// -- small DOM helpers ------------------------------------------------------------------

function h(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === 'class') node.className = v;
    else if (k === 'on') for (const [ev, fn] of Object.entries(v)) node.addEventListener(ev, fn);
    else node.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    node.append(c instanceof Node ? c : String(c));
  }
  return node;
}

const stateCell = (s) => h('td', { class: `st st-${String(s).replace(/[^a-z_]/gi, '')}` }, s ?? '—');

function fill(tableId, rows, empty) {
  const body = $(tableId).tBodies[0];
  if (!rows.length) {
    const cols = $(tableId).tHead.rows[0].cells.length;
    body.replaceChildren(h('tr', {}, h('td', { colspan: cols, class: 'muted' }, empty || 'none')));
  } else {
    body.replaceChildren(...rows);
  }
}

function ago(iso) {
  if (!iso) return '—';
  const s = Math.max(0, (Date.now() - new Date(iso).getTime()) / 1000);
  if (s < 1) return 'now';
  if (s < 90) return `${Math.round(s)} s ago`;
  if (s < 5400) return `${Math.round(s / 60)} min ago`;
  if (s < 172800) return `${Math.round(s / 3600)} h ago`;
  return `${Math.round(s / 86400)} d ago`;
}

function dur(s) {
  if (s === null || s === undefined) return '—';
  if (s < 1) return `${Math.round(s * 1000)} ms`;
  if (s < 120) return `${s.toFixed(1)} s`;
  if (s < 7200) return `${Math.round(s / 60)} min`;
  return `${(s / 3600).toFixed(1)} h`;
}

const time = (iso) => (iso ? new Date(iso).toLocaleTimeString() : '—');
const bytes = (n) => (n === null || n === undefined ? '—'
  : n < 1 << 20 ? `${Math.round(n / 1024)} KiB` : `${(n / (1 << 20)).toFixed(1)} MiB`);

function toast(text, kind = 'ok') {
  const t = $('toast');
  t.textContent = text;
  t.dataset.kind = kind;
  t.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { t.hidden = true; }, kind === 'error' ? 10000 : 5000);
}

// -- login ------------------------------------------------------------------------------

async function signIn(token) {
  // The token is good if it reads the cluster; it is an admin's if it may list tokens.
  await api('/api/v1/cluster', { token });
  let role = 'read';
  try {
    await api('/api/v1/tokens', { token });
    role = 'admin';
  } catch (e) {
    if (!(e instanceof HttpError) || e.status !== 403) throw e;
  }
  state.token = token;
  state.role = role;
  sessionStorage.setItem(TOKEN_KEY, token);
  start();
}

function signOut(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  state.token = null;
  state.role = null;
  for (const t of state.timers) clearInterval(t);
  state.timers = [];
  if (state.stream) state.stream.stop();
  state.stream = null;
  $('nav').hidden = true;
  $('status').hidden = true;
  $('banner').hidden = true;
  $('login-error').textContent = message || '';
  show('login');
  $('token').value = '';
  $('token').focus();
}

$('login-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const token = $('token').value.trim();
  $('login-error').textContent = '';
  $('login-submit').disabled = true;
  try {
    await signIn(token);
  } catch (e) {
    $('login-error').textContent = e instanceof HttpError
      ? `refused (${e.status}): ${e.detail}` : `cannot reach the node: ${e.message}`;
  } finally {
    $('login-submit').disabled = false;
  }
});
$('logout').addEventListener('click', () => signOut('signed out'));

// -- views ------------------------------------------------------------------------------

function show(view) {
  for (const v of ['login', 'cluster', 'work', 'events', 'job']) $(`view-${v}`).hidden = v !== view;
  for (const a of document.querySelectorAll('#nav a')) {
    if (a.dataset.view === view || (view === 'job' && a.dataset.view === 'work')) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  state.view = view;
}

function route() {
  if (!state.token) return show('login');
  const m = location.hash.match(/^#\/(cluster|work|events|job\/(\d+))?$/);
  const view = m && m[1] ? (m[2] ? 'job' : m[1]) : 'cluster';
  state.jobId = m && m[2] ? m[2] : null;
  show(view);
  if (view === 'work') refreshWork();
  if (view === 'events') refreshEvents();
  if (view === 'job') refreshJob();
}
window.addEventListener('hashchange', route);

function start() {
  $('nav').hidden = false;
  $('status').hidden = false;
  $('who').textContent = `${state.role} token`;
  for (const b of document.querySelectorAll('[data-admin]')) b.title = state.role === 'admin' ? '' : 'needs an admin token';
  route();
  refreshCluster();
  refreshHealth();
  state.timers.push(setInterval(refreshCluster, CLUSTER_MS));
  state.timers.push(setInterval(refreshHealth, HEALTH_MS));
  state.timers.push(setInterval(() => { if (state.view === 'work') refreshWork(); }, WORK_MS));
  state.timers.push(setInterval(() => { if (state.view === 'events') refreshEvents(); }, SLOW_MS));
  state.timers.push(setInterval(() => { if (state.view === 'job') refreshJob(); }, WORK_MS));
  startStream();
}

// One refresh of a kind at a time; one asked for meanwhile runs right after.
async function once(name, fn) {
  if (state.refreshing[name]) { state.refreshing[name] = 'again'; return; }
  state.refreshing[name] = true;
  try { await fn(); } catch (e) {
    if (!(e instanceof HttpError)) setBannerNote(`cannot reach the node: ${e.message}`);
  } finally {
    const again = state.refreshing[name] === 'again';
    state.refreshing[name] = false;
    if (again && state.token) once(name, fn);
  }
}

const soon = {};
function refreshSoon(name, fn) {
  clearTimeout(soon[name]);
  soon[name] = setTimeout(fn, 250);
}

// -- cluster ----------------------------------------------------------------------------

let bannerNote = '';
function setBannerNote(text) { bannerNote = text; renderBanner(); }

function refreshCluster() {
  return once('cluster', async () => {
    state.cluster = await api('/api/v1/cluster');
    bannerNote = '';
    renderCluster();
  });
}

function refreshHealth() {
  return once('health', async () => {
    state.health = await api('/health', { accept: [503] });
    renderHealth();
  });
}

function renderCluster() {
  const c = state.cluster;
  if (!c) return;
  $('leader-name').textContent = c.leader ?? 'none';
  $('leader-name').dataset.leader = c.leader ?? '';
  $('epoch').textContent = c.epoch ?? '—';
  $('leader-line').textContent = c.leader
    ? `${c.leader} leads, epoch ${c.epoch}, since ${time(c.leader_since)}`
    : `no leader now (last: ${c.last_leader ?? 'none'}, epoch ${c.epoch ?? '—'})`;
  const admin = state.role === 'admin';
  fill('nodes', c.nodes.map((n) => h('tr', { 'data-node': n.id },
    h('td', {}, n.id, n.id === c.leader ? ' ★' : ''),
    stateCell(n.id === c.leader ? 'leader' : n.role),
    stateCell(n.draining ? 'draining' : n.healthy ? 'healthy' : 'stale'),
    h('td', {}, ago(n.last_seen)),
    h('td', {}, h('button', {
      type: 'button', class: 'small', 'data-admin': true, title: admin ? null : 'needs an admin token',
      on: { click: () => drain(n.id, !n.draining) },
    }, n.draining ? 'Undrain' : 'Drain')),
  )), 'no node has reported');
  const db = c.database;
  $('db-line').textContent = db
    ? `primary ${db.server}, timeline ${db.timeline ?? '—'}, ${db.replicas.length} replica(s)`
      + (db.synchronous.length ? `, synchronous: ${db.synchronous.join(', ')}` : '')
      + (db.lagging.length ? `, lagging: ${db.lagging.join(', ')}` : '')
    : 'not read yet';
  const cache = c.cache;
  $('redis-line').textContent = !cache || !cache.configured ? 'not configured (optional)'
    : `${cache.available ? 'available' : 'unavailable'}, primary ${cache.primary ?? '—'}`;
  const region = c.region;
  $('region-line').textContent = !region ? '—' : region.role === 'standby' && region.standby
    ? `standby region: streaming ${region.standby.streaming ? 'yes' : 'no'}, lag ${dur(region.standby.replay_lag_s)} from ${region.standby.server}`
    : `${region.role} region${region.standby ? '' : ' (no standby region reported here)'}`;
  renderMembers();
  renderBanner();
}

function check(name) {
  return state.health && state.health.checks ? state.health.checks[name] : undefined;
}

function renderMembers() {
  const c = state.cluster;
  const patroni = check('patroni');
  if (patroni && patroni.detail && patroni.detail.members) {
    fill('pg', patroni.detail.members.map((m) => h('tr', {},
      h('td', {}, m.name), stateCell(m.role), stateCell(m.state), h('td', {}, m.timeline ?? '—'),
      h('td', {}, m.lag === undefined || m.lag === null || m.lag === '' ? '—' : `${m.lag} B`))));
  } else if (c && c.database) {
    const db = c.database;
    fill('pg', [h('tr', {}, h('td', {}, db.server), stateCell(db.in_recovery ? 'replica' : 'primary'),
      stateCell('running'), h('td', {}, db.timeline ?? '—'), h('td', {}, '—')),
    ...db.replicas.map((r) => h('tr', {}, h('td', {}, r.name), stateCell('replica'),
      stateCell(r.lagging ? 'lagging' : r.state), h('td', {}, db.timeline ?? '—'),
      h('td', {}, `${dur(r.replay_lag_s)} / ${r.replay_lag_bytes} B`)))]);
  } else {
    fill('pg', [], 'no PostgreSQL reading yet');
  }
  const redis = check('redis');
  const rows = [];
  if (c && c.cache && c.cache.configured) {
    rows.push(h('tr', {}, h('td', {}, 'primary'), h('td', {}, c.cache.primary ?? '—'),
      stateCell(c.cache.available ? 'ok' : 'unreachable')));
    for (const r of c.cache.replicas || []) {
      rows.push(h('tr', {}, h('td', {}, 'replica'), h('td', {}, r.address ?? r.name ?? JSON.stringify(r)),
        stateCell(r.state ?? (r.ok === false ? 'down' : 'ok'))));
    }
  }
  for (const s of (redis && redis.detail && redis.detail.sentinels) || []) {
    rows.push(h('tr', {}, h('td', {}, 'sentinel'), h('td', {}, s.address ?? '—'),
      stateCell(s.ok === false ? 'down' : 'ok')));
  }
  fill('redis', rows, 'Redis is not configured');
  const lb = check('load_balancers');
  $('lb-line').textContent = lb ? `${lb.status}${lb.message ? `: ${lb.message}` : ''}` : 'no HAProxy stats page configured (health.haproxy_stats_urls)';
  fill('lb', ((lb && lb.detail && lb.detail.servers) || []).map((s) => h('tr', { 'data-lb-server': `${s.backend}/${s.server}` },
    h('td', {}, s.haproxy), h('td', {}, s.backend), h('td', {}, s.server), stateCell(s.status))),
  lb ? 'no server reported' : 'not configured');
  const etcd = check('etcd');
  $('etcd-line').textContent = etcd ? `${etcd.status}${etcd.message ? `: ${etcd.message}` : ''}` : 'no election configured (one node)';
  fill('etcd', ((etcd && etcd.detail && etcd.detail.members) || []).map((m) => h('tr', {},
    h('td', {}, m.endpoint), stateCell(m.ok ? (String(m.member_id) === String(etcd.detail.leader) ? 'leader' : 'ok') : 'down'),
    h('td', {}, m.raft_term ?? m.error ?? '—'))), 'no etcd members reported');
}

function renderHealth() {
  const hl = state.health;
  if (!hl) return;
  $('health-node').textContent = `as ${hl.node} sees it: ${hl.status}`;
  const checks = Object.values(hl.checks || {});
  fill('checks', checks.map((c) => h('tr', { 'data-check': c.name },
    h('td', {}, c.name), stateCell(c.status), h('td', {}, c.latency_ms === null ? '—' : `${c.latency_ms} ms`),
    h('td', { class: 'wrap' }, c.message ?? ''))));
  const pred = check('predictions');
  $('predictions').textContent = pred
    ? (pred.message || (pred.status === 'ok' ? 'no failure forecast' : pred.status))
    : 'predictions are not reported by this node';
  renderMembers();
  renderBanner();
}

function renderBanner() {
  const problems = [];
  let level = 'degraded';
  const c = state.cluster;
  if (c && !c.leader && c.nodes.length) {
    problems.push(`no leader: failing over (last leader ${c.last_leader ?? 'none'}, epoch ${c.epoch ?? '—'})`);
    level = 'failing';
  }
  if (c) {
    const stale = c.nodes.filter((n) => !n.healthy && !n.draining).map((n) => n.id);
    if (stale.length) problems.push(`node(s) not reporting: ${stale.join(', ')}`);
    if (c.database && c.database.lagging.length) problems.push(`replicas lagging: ${c.database.lagging.join(', ')}`);
    if (c.cache && c.cache.configured && !c.cache.available) problems.push('Redis unavailable');
  }
  const hl = state.health;
  if (hl && hl.status !== 'ok') {
    const bad = Object.values(hl.checks || {}).filter((x) => x.status !== 'ok').map((x) => `${x.name} ${x.status}`);
    problems.push(`health ${hl.status}: ${bad.join(', ')}`);
    if (hl.status === 'failing') level = 'failing';
  }
  if (bannerNote) problems.push(bannerNote);
  const b = $('banner');
  b.hidden = !problems.length;
  b.dataset.level = level;
  b.textContent = problems.join(' · ');
}

// -- work -------------------------------------------------------------------------------

function jobLink(j) {
  return h('a', { href: `#/job/${j.id}` }, String(j.id), j.name ? ` ${j.name}` : '');
}

function refreshWork() {
  return once('work', async () => {
    const [pools, queued, running, done, activity] = await Promise.all([
      api('/api/v1/pools'),
      api('/api/v1/jobs?state=queued&limit=100'),
      api('/api/v1/jobs?state=in_progress&limit=100'),
      api('/api/v1/jobs?state=completed&limit=15'),
      api('/api/v1/activity?minutes=30'),
    ]);
    const reasons = {};
    for (const j of queued.items) {
      if (j.pool && j.waiting_reason) (reasons[j.pool] ||= new Set()).add(j.waiting_reason);
    }
    fill('pools', pools.map((p) => h('tr', { 'data-pool': p.name },
      h('td', {}, p.name), h('td', { class: 'wrap' }, p.labels.join(', ')),
      h('td', {}, p.desired_runners), h('td', {}, p.current_runners), h('td', {}, p.max_runners),
      h('td', {}, p.queued_jobs), h('td', { class: 'wrap' }, [...(reasons[p.name] || [])].join('; ') || '—'))),
    'no pools configured');
    const row = (j, ...cells) => h('tr', { 'data-job': j.id, 'data-state': j.state }, h('td', {}, jobLink(j)), ...cells);
    fill('jobs-queued', queued.items.map((j) => row(j, h('td', {}, j.repository), h('td', {}, j.pool ?? '—'),
      h('td', {}, ago(j.queued_at || j.first_seen_at).replace(' ago', '')),
      h('td', { class: 'wrap' }, j.waiting_reason ?? (j.pool ? 'starting a runner' : 'no pool matches')))),
    'no job is queued');
    fill('jobs-running', running.items.map((j) => row(j, h('td', {}, j.repository), h('td', {}, j.pool ?? '—'),
      h('td', {}, j.runner_name ?? '—'), h('td', {}, ago(j.started_at)))), 'no job is running');
    fill('jobs-done', done.items.map((j) => row(j, h('td', {}, j.repository), stateCell(j.conclusion ?? 'completed'),
      h('td', {}, j.runner_name ?? '—'), h('td', {}, ago(j.completed_at)))), 'no job has completed yet');
    rateChart($('chart-rate'), activity.minutes);
    waitChart($('chart-wait'), activity.minutes);
    intakeChart($('chart-intake'), activity.minutes);
    lagChart($('chart-lag'), activity.minutes);
  });
}

function refreshJob() {
  const id = state.jobId;
  if (!id || state.view !== 'job') return undefined;
  return once('job', async () => {
    if (id !== state.jobId) return;
    let hist;
    try {
      hist = await api(`/api/v1/jobs/${id}/history`);
    } catch (e) {
      if (e instanceof HttpError && e.status === 404) {
        $('job-title').textContent = `Job ${id}: not known (yet)`;
        return;
      }
      throw e;
    }
    const j = hist.job;
    $('job-title').textContent = `Job ${j.id}${j.name ? `: ${j.name}` : ''}`;
    $('job-title').dataset.state = j.state;
    const facts = [['state', j.state], ['conclusion', j.conclusion], ['repository', j.repository],
      ['workflow', j.workflow_name], ['run', `${j.run_id} attempt ${j.run_attempt}`],
      ['labels', j.labels.join(', ')], ['pool', j.pool ?? 'none matches'], ['runner', j.runner_name],
      ['waiting because', j.waiting_reason], ['queued', time(j.queued_at)], ['started', time(j.started_at)],
      ['completed', time(j.completed_at)], ['last source', j.last_source]];
    $('job-facts').replaceChildren(...facts.flatMap(([k, v]) => [h('dt', {}, k),
      h('dd', k === 'state' ? { id: 'job-state', class: `st st-${v}` } : {}, v ?? '—')]));
    const lines = [
      ...hist.deliveries.map((d) => ({ at: d.received_at, what: `delivery ${d.event}${d.action ? `.${d.action}` : ''}`,
        node: d.received_by, detail: `${d.outcome}${d.detail ? `: ${d.detail}` : ''} (${d.delivery_guid})` })),
      ...hist.events.map((e) => ({ at: e.at, what: e.kind, node: e.node,
        detail: `${e.subject ?? ''} ${Object.entries(e.detail).map(([k, v]) => `${k}=${typeof v === 'object' ? JSON.stringify(v) : v}`).join(' ')}` })),
    ].sort((a, b) => new Date(a.at) - new Date(b.at));
    fill('job-history', lines.map((l) => h('tr', {}, h('td', {}, time(l.at)), h('td', {}, l.what),
      h('td', {}, l.node), h('td', { class: 'wrap' }, l.detail))), 'nothing recorded');
    const failing = hist.runners.some((r) => r.last_error && ['requested', 'registered'].includes(r.state));
    $('job-retry').hidden = !(j.state === 'queued' && failing);
    fill('job-runners', hist.runners.map((r) => h('tr', {}, h('td', {}, r.name), stateCell(r.state),
      h('td', {}, r.attempts), h('td', { class: 'wrap' }, r.last_error ?? ''), h('td', {}, time(r.created_at)),
      h('td', {}, time(r.exited_at)))), 'no runner was started for it');
  });
}

// -- incidents, events, backups -----------------------------------------------------------

function refreshEvents() {
  return once('events', async () => {
    const [incidents, backups, status, drills] = await Promise.all([
      api('/api/v1/incidents?limit=30'),
      api('/api/v1/backups?limit=15'),
      api('/api/v1/backups/status'),
      api('/api/v1/dr/drills?limit=5'),
    ]);
    // The newest restore test, good or not (a failed one is what an operator must see).
    const restoreTest = (r) => {
      const c = r.checks.find((x) => x.kind === 'restore_test');
      return c ? `${c.ok ? 'ok' : 'FAILED'} ${ago(c.finished_at)}` : 'never';
    };
    fill('backup-repos', (status.enabled ? status.repos : []).map((r) => h('tr', { 'data-repo': r.repo },
      h('td', {}, `${r.repo} ${r.name}`), ...['full', 'diff', 'incr', 'verify'].map((k) => h('td', {}, r.last[k] ? ago(r.last[k]) : 'never')),
      h('td', {}, restoreTest(r)), stateCell(r.overdue.length ? r.overdue.join(', ') : 'ok'))),
    status.enabled ? 'no repository configured' : 'backups are off on this node');
    const admin = state.role === 'admin';
    fill('incidents', incidents.items.map((i) => h('tr', { 'data-incident': i.id },
      h('td', {}, time(i.detected_at)), h('td', {}, i.component), h('td', { class: 'wrap' }, i.summary),
      h('td', {}, dur(i.detection_s)), h('td', {}, dur(i.recovery_s)),
      stateCell(i.recovered_at ? 'over' : 'open'),
      h('td', {}, i.acknowledged_at
        ? h('span', { class: 'muted' }, `acknowledged by ${i.acknowledged_by}`)
        : h('button', { type: 'button', class: 'small', 'data-admin': true, title: admin ? null : 'needs an admin token',
          on: { click: () => acknowledge(i) } }, 'Acknowledge')))), 'no incident recorded');
    fill('backups', backups.items.map((b) => h('tr', {}, h('td', {}, time(b.finished_at)), h('td', {}, b.repo),
      h('td', {}, b.kind), stateCell(b.ok ? 'ok' : 'failing'), h('td', {}, dur(b.duration_s)),
      h('td', {}, bytes(b.size_bytes)), h('td', {}, b.node))), 'no backup recorded (backups are off or none ran yet)');
    // A drill passes when no job was lost or ran twice (what `runnerhub dr drill` exits by).
    fill('drills', drills.items.map((d) => h('tr', { 'data-drill': d.id },
      h('td', {}, ago(d.started_at)), stateCell(d.jobs_lost || d.ran_twice ? 'failing' : 'ok'),
      h('td', {}, dur(d.rto_webhook_s)), h('td', {}, dur(d.rto_runner_s)),
      h('td', {}, `${d.jobs_lost} lost, ${d.ran_twice} twice, ${d.acknowledged_missing} deliveries`),
      h('td', { class: 'wrap' }, d.report.failback || '—'))), 'no drill recorded (runnerhub dr drill)');
  });
}

function addEvent(e) {
  state.events.unshift(e);
  if (state.events.length > MAX_EVENTS) state.events.length = MAX_EVENTS;
  const list = $('events');
  list.prepend(h('li', { 'data-kind': e.kind }, `${time(e.at)} ${e.node} ${e.kind} ${e.subject ?? ''}`));
  while (list.children.length > MAX_EVENTS) list.lastChild.remove();
}

function onEvent(e) {
  addEvent(e);
  const kind = e.kind || '';
  if (kind.startsWith('leader.') || kind.startsWith('operator.') || kind.startsWith('node.')) {
    refreshSoon('cluster', refreshCluster);
  }
  if (state.view === 'work' && (kind.startsWith('job.') || kind.startsWith('runner.'))) refreshSoon('work', refreshWork);
  if (state.view === 'job' && (e.subject === `job:${state.jobId}` || kind.startsWith('runner.'))) refreshSoon('job', refreshJob);
  if (state.view === 'events' && (kind.startsWith('operator.') || kind.startsWith('leader.') || kind.startsWith('backup'))) {
    refreshSoon('events', refreshEvents);
  }
}

async function startStream() {
  let lastId = null;
  try {
    const recent = await api('/api/v1/events?limit=30');
    for (const e of recent.items.slice().reverse()) addEvent(e);
    lastId = recent.items.length ? recent.items[0].id : 0;
  } catch (e) {
    lastId = null;
  }
  if (!state.token) return;
  state.stream = new LiveStream({
    token: state.token,
    onEvent,
    onState: (up) => {
      $('live').dataset.state = up ? 'on' : 'off';
      $('live').textContent = up ? 'live' : 'live: reconnecting';
    },
    onUnauthorized: () => signOut('signed out: the token was refused'),
  });
  state.stream.start(lastId);
}

// -- actions (admin) ----------------------------------------------------------------------

const dialog = $('confirm');

function confirmAction(text, targets) {
  $('confirm-text').textContent = text;
  const select = $('confirm-target');
  select.hidden = !targets;
  $('confirm-target-label').hidden = !targets;
  if (targets) {
    select.replaceChildren(h('option', { value: '' }, 'any node'), ...targets.map((t) => h('option', { value: t }, t)));
  }
  dialog.returnValue = '';
  dialog.showModal();
  $('confirm-cancel').focus();
  return new Promise((resolve) => {
    dialog.addEventListener('close', () => resolve(dialog.returnValue === 'ok'), { once: true });
  });
}

async function act(label, fn) {
  try {
    const answer = await fn();
    toast(`${label}: done${answer && answer.status ? ` (${answer.status})` : ''}`);
  } catch (e) {
    toast(e instanceof HttpError ? `${label}: refused (${e.status}): ${e.detail}` : `${label}: ${e.message}`, 'error');
  }
}

$('handoff').addEventListener('click', async () => {
  const c = state.cluster;
  const targets = c ? c.nodes.filter((n) => n.id !== c.leader && !n.draining && n.healthy).map((n) => n.id) : [];
  if (!(await confirmAction(`Ask the leader (${c && c.leader ? c.leader : 'none'}) to step down?`, targets))) return;
  const to = $('confirm-target').value || null;
  await act('leader handoff', () => api('/api/v1/leader/handoff', { method: 'POST', body: { to } }));
  refreshCluster();
});

async function drain(node, on) {
  const text = on ? `Drain ${node}? It stops taking traffic and leadership.` : `Let ${node} serve again?`;
  if (!(await confirmAction(text))) return;
  await act(on ? `drain ${node}` : `undrain ${node}`, () =>
    api(`/api/v1/nodes/${encodeURIComponent(node)}/drain`, { method: on ? 'POST' : 'DELETE' }));
  refreshCluster();
}

async function acknowledge(incident) {
  if (!(await confirmAction(`Acknowledge incident ${incident.id} (${incident.component}: ${incident.summary})?`))) return;
  await act(`acknowledge incident ${incident.id}`, () =>
    api(`/api/v1/incidents/${incident.id}/acknowledge`, { method: 'POST' }));
  refreshEvents();
}

$('job-retry').addEventListener('click', async () => {
  const id = state.jobId;
  if (!(await confirmAction(`Retry provisioning job ${id}'s runner now, not at its backed-off time?`))) return;
  await act(`retry job ${id}`, () => api(`/api/v1/jobs/${id}/retry`, { method: 'POST' }));
  refreshJob();
});

// -- start ------------------------------------------------------------------------------

const saved = sessionStorage.getItem(TOKEN_KEY);
if (saved) {
  signIn(saved).catch((e) => signOut(e instanceof HttpError ? `signed out: ${e.detail}` : ''));
} else {
  signOut('');
}
