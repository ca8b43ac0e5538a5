// Small SVG charts drawn by hand: no library, no inline style (classes only, for the CSP).
const NS = 'http://www.w3.org/2000/svg';
const W = 320, H = 130, L = 30, R = 6, T = 14, B = 18;

function el(tag, attrs, text) {
  const node = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = text;
  return node;
}

function frame(title, max, minutes) {
  const svg = el('svg', { viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': title });
  svg.append(el('title', {}, title));
  svg.append(el('line', { class: 'axis', x1: L, y1: H - B, x2: W - R, y2: H - B }));
  svg.append(el('line', { class: 'axis', x1: L, y1: T, x2: L, y2: H - B }));
  svg.append(el('text', { x: L - 4, y: T + 4, 'text-anchor': 'end' }, fmt(max)));
  svg.append(el('text', { x: L - 4, y: H - B, 'text-anchor': 'end' }, '0'));
  if (minutes.length) {
    svg.append(el('text', { x: L, y: H - 4 }, clock(minutes[0].minute)));
    svg.append(el('text', { x: W - R, y: H - 4, 'text-anchor': 'end' }, clock(minutes[minutes.length - 1].minute)));
  }
  return svg;
}

function legend(svg, items) {
  let x = L + 4;
  for (const [cls, label] of items) {
    svg.append(el('rect', { class: cls, x, y: 2, width: 8, height: 8 }));
    svg.append(el('text', { x: x + 11, y: 10 }, label));
    x += 14 + label.length * 5.5;
  }
}

function fmt(v) {
  if (v >= 100) return String(Math.round(v));
  if (v >= 10) return v.toFixed(0);
  return String(Math.round(v * 10) / 10);
}

function clock(iso) {
  const d = new Date(iso);
  return d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
}

const y = (v, max) => H - B - (v / max) * (H - B - T);

// Jobs queued and started per minute: two bars per minute.
export function rateChart(container, minutes) {
  const max = Math.max(1, ...minutes.map((m) => Math.max(m.queued, m.started)));
  const total = minutes.reduce((a, m) => [a[0] + m.queued, a[1] + m.started], [0, 0]);
  const svg = frame(`jobs per minute over ${minutes.length} minutes: ${total[0]} queued, ${total[1]} started`, max, minutes);
  const slot = (W - L - R) / Math.max(1, minutes.length);
  const bw = Math.max(1, slot / 2 - 0.5);
  minutes.forEach((m, i) => {
    const x = L + i * slot;
    if (m.queued) svg.append(el('rect', { class: 's1', x, y: y(m.queued, max), width: bw, height: H - B - y(m.queued, max) }));
    if (m.started) svg.append(el('rect', { class: 'kk', x: x + bw, y: y(m.started, max), width: bw, height: H - B - y(m.started, max) }));
  });
  legend(svg, [['k1', 'queued'], ['kk', 'started']]);
  container.replaceChildren(svg);
}

// Queue wait of the jobs that started each minute: p50 and p99 lines (seconds).
export function waitChart(container, minutes) {
  const vals = minutes.flatMap((m) => [m.wait_p50_s, m.wait_p99_s]).filter((v) => v !== null);
  const max = Math.max(1, ...vals);
  const svg = frame(`queue wait p50 and p99 per minute, seconds; highest ${fmt(max)} s`, max, minutes);
  const slot = (W - L - R) / Math.max(1, minutes.length - 1);
  for (const [key, cls] of [['wait_p50_s', 'l1'], ['wait_p99_s', 'l2']]) {
    let d = '';
    minutes.forEach((m, i) => {
      const v = m[key];
      if (v === null) return;
      d += `${d ? 'L' : 'M'}${(L + i * slot).toFixed(1)},${y(v, max).toFixed(1)}`;
      svg.append(el('circle', { class: cls === 'l1' ? 'k1' : 'k2', cx: L + i * slot, cy: y(v, max), r: 1.8 }));
    });
    if (d) svg.append(el('path', { class: cls, d }));
  }
  legend(svg, [['k1', 'p50'], ['k2', 'p99']]);
  svg.append(el('text', { x: L + 4, y: H - B - 3 }, 's'));
  container.replaceChildren(svg);
}

// Webhook deliveries taken in per minute (the intake rate): one bar per minute.
export function intakeChart(container, minutes) {
  const max = Math.max(1, ...minutes.map((m) => m.deliveries));
  const total = minutes.reduce((a, m) => a + m.deliveries, 0);
  const svg = frame(`webhook deliveries per minute over ${minutes.length} minutes: ${total} in all`, max, minutes);
  const slot = (W - L - R) / Math.max(1, minutes.length);
  minutes.forEach((m, i) => {
    if (!m.deliveries) return;
    svg.append(el('rect', { class: 's1', x: L + i * slot, y: y(m.deliveries, max), width: Math.max(1, slot - 1), height: H - B - y(m.deliveries, max) }));
  });
  legend(svg, [['k1', 'deliveries']]);
  container.replaceChildren(svg);
}

// The most any PostgreSQL replica was behind the primary each minute (seconds); gaps
// where nobody measured it (no replica, or the primary unreachable).
export function lagChart(container, minutes) {
  const vals = minutes.map((m) => m.replica_lag_s).filter((v) => v !== null);
  const max = Math.max(1, ...vals);
  const title = vals.length
    ? `replication lag per minute, seconds; highest ${fmt(Math.max(...vals))} s`
    : 'replication lag: no replica measured in this window';
  const svg = frame(title, max, minutes);
  const slot = (W - L - R) / Math.max(1, minutes.length - 1);
  let d = '';
  minutes.forEach((m, i) => {
    const v = m.replica_lag_s;
    if (v === null) { d += ' '; return; }
    d += `${d && !d.endsWith(' ') ? 'L' : 'M'}${(L + i * slot).toFixed(1)},${y(v, max).toFixed(1)}`;
    svg.append(el('circle', { class: 'k2', cx: L + i * slot, cy: y(v, max), r: 1.8 }));
  });
  if (d.trim()) svg.append(el('path', { class: 'l2', d: d.trim() }));
  legend(svg, [['k2', vals.length ? 'most-behind replica' : 'no replica measured']]);
  svg.append(el('text', { x: L + 4, y: H - B - 3 }, 's'));
  container.replaceChildren(svg);
}
