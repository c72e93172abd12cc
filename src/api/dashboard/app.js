// driftwarden dashboard: plain JavaScript over the daemon's JSON API, charts drawn as
// inline SVG. Built with DOM calls and textContent only, never innerHTML, so record
// text (notes, reasons, dead letters) cannot inject markup.
'use strict';

(() => {
  // Band half-width in MADs: 1.4826 × MAD estimates a standard deviation.
  const BAND_K = 3 * 1.4826;
  const TOKEN_KEY = 'driftwarden.token';
  const REFRESH_MS = 15000;
  const RANGES = {
    '6h': { ms: 6 * 3600e3, step: '5m' },
    '24h': { ms: 24 * 3600e3, step: '10m' },
    '7d': { ms: 7 * 86400e3, step: '1h' },
    '30d': { ms: 30 * 86400e3, step: '6h' },
  };
  const SVG_NS = 'http://www.w3.org/2000/svg';

  const fmtInt = (v) => Math.round(v).toLocaleString('en-US');
  const fmtNum = (v) => (Math.abs(v) >= 100 ? fmtInt(v) : v.toPrecision(3));
  const fmtPct = (v) => (v * 100).toFixed(v < 0.1 ? 2 : 1) + '%';
  const fmtUsd = (v) => '$' + (Math.abs(v) >= 1 ? v.toFixed(2) : v.toPrecision(3));
  const fmtMs = (v) => (v >= 1000 ? (v / 1000).toFixed(2) + ' s' : Math.round(v) + ' ms');

  const LANES = [
    { key: 'cost', title: 'Cost', signals: [
      ['requests', 'Requests', fmtInt],
      ['spend_usd', 'Spend', fmtUsd],
      ['cost_per_request_usd', 'Cost per request', fmtUsd],
      ['tokens_per_request', 'Tokens per request', fmtNum],
    ] },
    { key: 'structure', title: 'Structure', signals: [
      ['error_rate', 'Error rate', fmtPct],
      ['truncation_rate', 'Truncation rate', fmtPct],
      ['mean_latency_ms', 'Mean latency', fmtMs],
    ] },
    { key: 'eval', title: 'Eval', signals: [
      ['mean_score', 'Mean score', fmtNum],
      ['pass_rate', 'Pass rate', fmtPct],
      ['evals', 'Evals', fmtInt],
    ] },
  ];

  const state = {
    scope: 'global',
    range: '24h',
    token: sessionStorage.getItem(TOKEN_KEY) || '',
    expandedAlerts: new Set(),
    changes: [],
    series: null,
    seriesSeq: 0,
  };

  const $ = (id) => document.getElementById(id);

  // --- DOM helpers ---------------------------------------------------------------

  function build(doc, ns, tag, attrs, children) {
    const node = ns ? doc.createElementNS(ns, tag) : doc.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === 'text') node.textContent = String(v);
      else if (k.startsWith('on')) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v === true ? '' : String(v));
    }
    for (const c of children.flat()) {
      if (c === null || c === undefined || c === false) continue;
      node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return node;
  }
  const h = (tag, attrs, ...children) => build(document, null, tag, attrs, children);
  const s = (tag, attrs, ...children) => build(document, SVG_NS, tag, attrs, children);

  function fill(id, ...nodes) {
    $(id).replaceChildren(...nodes.flat().filter(Boolean));
  }

  function table(headers, rows) {
    return h('div', { class: 'table-wrap' },
      h('table', {},
        h('thead', {}, h('tr', {}, headers.map(([label, cls]) => h('th', { class: cls, text: label })))),
        h('tbody', {}, rows)));
  }

  const empty = (text) => h('div', { class: 'empty', text });
  const errorText = (text) => h('div', { class: 'empty error-text', text });

  // --- formatting ----------------------------------------------------------------

  function fmtTime(ms) {
    if (ms === null || ms === undefined) return '—';
    return new Date(ms).toISOString().slice(0, 16).replace('T', ' ');
  }

  const toMs = (iso) => (iso ? Date.parse(iso) : null);

  function fmtSpan(ms) {
    const m = Math.round(Math.abs(ms) / 60000);
    if (m < 60) return m + 'm';
    const hours = Math.floor(m / 60);
    if (hours < 48) return hours + 'h ' + (m % 60) + 'm';
    return Math.floor(hours / 24) + 'd ' + (hours % 24) + 'h';
  }

  function relative(ms) {
    if (ms === null || ms === undefined || Number.isNaN(ms)) return '—';
    const d = ms - Date.now();
    return d >= 0 ? 'in ' + fmtSpan(d) : fmtSpan(d) + ' ago';
  }

  function fmtBytes(n) {
    const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
    return (i === 0 ? n : n.toFixed(1)) + ' ' + units[i];
  }

  function scopeText(scope) {
    if (!scope || typeof scope !== 'object') return 'everything';
    const parts = Object.entries(scope).map(([k, v]) => k + '=' + v);
    return parts.length ? parts.join(', ') : 'everything';
  }

  // --- API -----------------------------------------------------------------------

  // Resolves to { ok, status, json, text, error }; never rejects, so a daemon that is
  // down shows in the status line instead of as an unhandled rejection.
  async function api(path, opts) {
    const { method = 'GET', body, auth = false, raw = false } = opts || {};
    const headers = {};
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    if (auth && state.token) headers.Authorization = 'Bearer ' + state.token;
    try {
      const r = await fetch(path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        cache: 'no-store',
      });
      const text = await r.text();
      let json = null;
      if (!raw) {
        try { json = text ? JSON.parse(text) : null; } catch (_) { json = null; }
      }
      const error = r.ok ? null : (json && json.error) || text || r.statusText;
      return { ok: r.ok, status: r.status, json, text, error };
    } catch (e) {
      return { ok: false, status: 0, json: null, text: '', error: 'cannot reach the daemon (' + e.message + ')' };
    }
  }

  // --- scope picker --------------------------------------------------------------

  async function loadScopes() {
    const r = await api('/v1/scopes');
    if (!r.ok) throw new Error('scopes: ' + r.error);
    const select = $('scope');
    const groups = new Map();
    let globalRequests = 0;
    for (const sc of r.json.scopes) {
      if (sc.dim === 'global') { globalRequests = sc.requests; continue; }
      if (!groups.has(sc.dim)) groups.set(sc.dim, []);
      groups.get(sc.dim).push(sc);
    }
    const known = new Set(['global']);
    const nodes = [h('option', { value: 'global', text: 'global (' + fmtInt(globalRequests) + ' req)' })];
    for (const [dim, list] of groups) {
      nodes.push(h('optgroup', { label: dim }, list.map((sc) => {
        const value = dim + '=' + sc.value;
        known.add(value);
        return h('option', { value, text: sc.value + ' (' + fmtInt(sc.requests) + ' req)' });
      })));
    }
    if (!known.has(state.scope)) nodes.push(h('option', { value: state.scope, text: state.scope }));
    select.replaceChildren(...nodes);
    select.value = state.scope;
  }

  // --- charts --------------------------------------------------------------------

  function laneSkeleton() {
    fill('lane-panels', LANES.map((lane) =>
      h('div', { class: 'lane', id: 'lane-' + lane.key },
        h('h3', { text: lane.title }),
        h('div', { class: 'charts' }, lane.signals.map(([key, title]) =>
          h('figure', { class: 'chart', id: 'chart-' + lane.key + '-' + key },
            h('figcaption', {},
              h('div', { class: 'head' }, h('span', { class: 'name', text: title }), h('span', { class: 'value', text: '…' })),
              h('div', { class: 'readout', text: '' })),
            s('svg', { viewBox: '0 0 360 140', role: 'img', 'aria-label': title })))))));
  }

  // A change marks a chart when it applies to the scope shown: changes to everything
  // always, scoped ones on the global view and on the scope they name.
  function changeApplies(change) {
    const scope = change.scope || {};
    const entries = Object.entries(scope);
    if (entries.length === 0 || state.scope === 'global') return true;
    const [dim, value] = state.scope.split(/=(.*)/s);
    return scope[dim] === value;
  }

  // Contiguous runs of indices where `ok(i)` holds.
  function runs(n, ok) {
    const out = [];
    let cur = null;
    for (let i = 0; i < n; i += 1) {
      if (ok(i)) { if (!cur) { cur = []; out.push(cur); } cur.push(i); } else cur = null;
    }
    return out;
  }

  function drawChart(fig, t, stepMs, sig, fmt, changes) {
    const W = 360, H = 140, L = 46, R = 6, T = 8, B = 18;
    const svg = fig.querySelector('svg');
    const readout = fig.querySelector('.readout');
    const valueEl = fig.querySelector('.head .value');
    const values = sig.values, median = sig.median, mad = sig.mad;
    const n = t.length;
    // Rates cannot pass 100%, so neither may their band.
    const cap = fmt === fmtPct ? 1 : Infinity;
    const hi = (i) => Math.min(cap, median[i] + BAND_K * mad[i]);
    const lo = (i) => Math.max(0, median[i] - BAND_K * mad[i]);
    const hasBand = (i) => median[i] !== null && mad[i] !== null;
    const has = (i) => values[i] !== null;
    const outside = (i) => has(i) && hasBand(i) && (values[i] > hi(i) || values[i] < lo(i));

    let ymax = 0;
    for (let i = 0; i < n; i += 1) {
      if (has(i)) ymax = Math.max(ymax, values[i]);
      if (hasBand(i)) ymax = Math.max(ymax, hi(i));
    }
    ymax = ymax > 0 ? ymax * 1.08 : 1;
    const t0 = t[0], t1 = t[n - 1] + stepMs;
    const x = (ms) => L + ((ms - t0) / (t1 - t0)) * (W - L - R);
    const xi = (i) => x(t[i] + stepMs / 2);
    const y = (v) => T + (1 - v / ymax) * (H - T - B);
    const pt = (px, py) => px.toFixed(1) + ' ' + py.toFixed(1);

    const nodes = [];
    for (const f of [0, 0.5, 1]) {
      nodes.push(s('line', { class: 'grid', x1: L, x2: W - R, y1: y(ymax * f), y2: y(ymax * f) }));
      nodes.push(s('text', { class: 'axis', x: L - 4, y: y(ymax * f) + 3, 'text-anchor': 'end', text: fmt(ymax * f) }));
    }
    nodes.push(s('text', { class: 'axis', x: L, y: H - 5, text: fmtTime(t0).slice(5) }));
    nodes.push(s('text', { class: 'axis', x: W - R, y: H - 5, 'text-anchor': 'end', text: fmtTime(t1).slice(5) }));

    const bandD = runs(n, hasBand).map((run) => {
      const top = run.map((i) => pt(xi(i), y(hi(i))));
      const bottom = run.slice().reverse().map((i) => pt(xi(i), y(lo(i))));
      return 'M' + top.join(' L') + ' L' + bottom.join(' L') + ' Z';
    }).join(' ');
    if (bandD) nodes.push(s('path', { class: 'band', d: bandD }));

    const obsRuns = runs(n, has);
    const obsD = obsRuns.map((run) => 'M' + run.map((i) => pt(xi(i), y(values[i]))).join(' L') + (run.length === 1 ? ' l0.1 0' : '')).join(' ');
    const points = obsRuns.reduce((a, r) => a + r.length, 0);
    nodes.push(s('path', { class: 'obs', d: obsD || 'M0 0', 'data-points': points }));
    for (let i = 0; i < n; i += 1) {
      if (outside(i)) nodes.push(s('circle', { class: 'out', cx: xi(i), cy: y(values[i]), r: 2.5 }));
    }

    for (const c of changes) {
      const ms = c.ts_ms;
      if (ms < t0 || ms > t1) continue;
      const label = c.kind + ' at ' + fmtTime(ms) + ' UTC (' + scopeText(c.scope) + ')' + (c.note ? ': ' + c.note : '');
      nodes.push(s('line', { class: 'change', x1: x(ms), x2: x(ms), y1: T, y2: H - B }));
      nodes.push(s('line', { class: 'change-hit', x1: x(ms), x2: x(ms), y1: T, y2: H - B }, s('title', { text: label })));
    }
    if (points === 0) {
      nodes.push(s('text', { class: 'nodata', x: (L + W) / 2, y: H / 2, 'text-anchor': 'middle', text: 'no data in this range' }));
    }
    const cursor = s('line', { class: 'cursor', x1: 0, x2: 0, y1: T, y2: H - B, visibility: 'hidden' });
    nodes.push(cursor);
    svg.replaceChildren(...nodes);

    const show = (i) => {
      valueEl.textContent = i === null || !has(i) ? '—' : fmt(values[i]);
      valueEl.classList.toggle('outside', i !== null && outside(i));
      if (i === null) { readout.textContent = 'no data'; return; }
      readout.textContent = fmtTime(t[i]) + ' UTC' + (hasBand(i) ? ' · normal ' + fmt(lo(i)) + '–' + fmt(hi(i)) : ' · no baseline yet');
    };
    let latest = null;
    for (let i = n - 1; i >= 0; i -= 1) if (has(i)) { latest = i; break; }
    const showLatest = () => {
      show(latest);
      cursor.setAttribute('visibility', 'hidden');
    };
    showLatest();
    svg.onmousemove = (ev) => {
      const box = svg.getBoundingClientRect();
      const px = ((ev.clientX - box.left) / box.width) * W;
      const i = Math.min(n - 1, Math.max(0, Math.floor(((px - L) / (W - L - R)) * n)));
      show(i);
      cursor.setAttribute('x1', xi(i));
      cursor.setAttribute('x2', xi(i));
      cursor.setAttribute('visibility', 'visible');
    };
    svg.onmouseleave = showLatest;
  }

  function drawLanes() {
    const data = state.series;
    if (!data) return;
    const changes = state.changes.filter(changeApplies);
    $('lanes-scope').textContent = state.scope + ' · ' + fmtTime(toMs(data.since)) + ' → ' + fmtTime(toMs(data.until)) + ' UTC';
    for (const lane of LANES) {
      for (const [key, , fmt] of lane.signals) {
        const fig = $('chart-' + lane.key + '-' + key);
        const sig = data.lanes[lane.key] && data.lanes[lane.key][key];
        if (fig && sig && data.t.length) drawChart(fig, data.t, data.step_ms, sig, fmt, changes);
      }
    }
  }

  async function loadSeries() {
    const seq = ++state.seriesSeq;
    const range = RANGES[state.range];
    const until = Date.now();
    const q = new URLSearchParams({
      scope: state.scope,
      since: new Date(until - range.ms).toISOString(),
      until: new Date(until).toISOString(),
      step: range.step,
    });
    const r = await api('/v1/series?' + q);
    if (seq !== state.seriesSeq) return;
    if (!r.ok) throw new Error('series: ' + r.error);
    state.series = r.json;
    drawLanes();
  }

  // --- alerts --------------------------------------------------------------------

  function tierBadge(a) {
    const rank = a.tier_rank;
    const cls = rank === 1 || rank === 2 || rank === 3 ? 'rank-' + rank : 'rank-other';
    return h('span', { class: 'badge ' + cls, title: rank ? 'tier rank ' + rank : null, text: a.tier || 'untiered' });
  }

  async function loadAlerts() {
    const q = new URLSearchParams({ limit: '200' });
    const st = $('alert-state').value;
    if (st) q.set('state', st);
    const r = await api('/v1/alerts?' + q);
    // A daemon without the alerts API answers 404: an empty panel, not an error.
    if (r.status === 404) { fill('alerts-body', empty('This daemon does not serve alerts yet.')); return; }
    if (!r.ok) { fill('alerts-body', errorText('Cannot load alerts: ' + r.error)); return; }
    const alerts = (r.json && r.json.alerts) || [];
    if (!alerts.length) { fill('alerts-body', empty('No alerts' + (st ? ' in state ' + st : '') + '.')); return; }
    const rows = [];
    for (const a of alerts) {
      const open = state.expandedAlerts.has(a.id);
      const toggle = () => {
        if (state.expandedAlerts.has(a.id)) state.expandedAlerts.delete(a.id); else state.expandedAlerts.add(a.id);
        loadAlerts().catch(report);
      };
      rows.push(h('tr', { class: 'clickable', onclick: toggle, 'aria-expanded': String(open) },
        h('td', {}, tierBadge(a)),
        h('td', {}, h('span', { class: 'badge state-' + a.state, text: a.state })),
        h('td', { text: a.rule }),
        h('td', { text: a.kind }),
        h('td', { text: scopeText(a.scope) }),
        h('td', { class: 'nowrap', title: a.started_at, text: relative(toMs(a.started_at)) }),
        h('td', {}, a.summary || '', a.suppressed_by ? h('div', { class: 'hint', text: 'suppressed by exception #' + a.suppressed_by }) : null)));
      if (open) {
        rows.push(h('tr', { class: 'detail' }, h('td', { colspan: 7 },
          h('div', { class: 'hint', text: 'lane ' + a.lane + ' · started ' + fmtTime(toMs(a.started_at)) + ' · fired ' + fmtTime(toMs(a.fired_at)) + ' · resolved ' + fmtTime(toMs(a.resolved_at)) + ' (UTC)' }),
          h('pre', { text: JSON.stringify(a.evidence, null, 2) }))));
      }
    }
    fill('alerts-body', table([['Tier'], ['State'], ['Rule'], ['Kind'], ['Scope'], ['Started'], ['Summary']], rows));
  }

  // --- exceptions ----------------------------------------------------------------

  function exMessage(text, ok) {
    const m = $('ex-message');
    m.textContent = text;
    m.className = 'message ' + (ok ? 'ok' : 'error');
  }

  function needToken() {
    if (state.token) return false;
    exMessage('Enter the API token at the top first: changes need it.', false);
    return true;
  }

  async function renew(id, duration) {
    if (needToken()) return;
    const r = await api('/v1/exceptions/' + id + '/renew', { method: 'POST', body: { for: duration }, auth: true });
    exMessage(r.ok ? 'Renewed exception #' + id + ' for ' + duration + '.' : 'Renewal failed: ' + r.error, r.ok);
    await loadExceptions();
  }

  async function revoke(id) {
    if (needToken()) return;
    if (!window.confirm('Revoke exception #' + id + '? Its alerts will notify again.')) return;
    const r = await api('/v1/exceptions/' + id, { method: 'DELETE', auth: true });
    exMessage(r.ok ? 'Revoked exception #' + id + '.' : 'Revoke failed: ' + r.error, r.ok);
    await loadExceptions();
  }

  async function loadExceptions() {
    const all = $('ex-inactive').checked;
    const r = await api('/v1/exceptions' + (all ? '' : '?active=true'));
    if (!r.ok) { fill('exceptions-body', errorText('Cannot load exceptions: ' + r.error)); return; }
    const list = r.json.exceptions || [];
    if (!list.length) { fill('exceptions-body', empty(all ? 'No exceptions.' : 'No active exceptions.')); return; }
    const noToken = state.token ? null : 'Enter the API token at the top to renew or revoke';
    const rows = list.map((e) => {
      const live = e.status === 'active';
      const dur = h('input', { value: '7d', 'aria-label': 'renew for', title: 'how much longer, e.g. 7d' });
      return h('tr', { 'data-id': e.id },
        h('td', { class: 'num', text: '#' + e.id }),
        h('td', { text: e.rule }),
        h('td', { text: scopeText(e.scope) }),
        h('td', { text: e.owner }),
        h('td', {}, e.reason, e.ticket ? h('div', { class: 'hint', text: 'ticket ' + e.ticket }) : null),
        h('td', {}, h('span', { class: 'badge state-' + e.status, text: e.status })),
        h('td', { class: 'nowrap', title: e.expires_at, text: live ? relative(toMs(e.expires_at)) : 'ended ' + relative(e.revoked_ms || toMs(e.expires_at)) }),
        h('td', { class: 'num', text: e.renewals }),
        h('td', { class: 'num', title: e.last_hit_ms ? 'last hit ' + fmtTime(e.last_hit_ms) + ' UTC' : 'never hit', text: e.hits }),
        h('td', {}, live ? h('div', { class: 'row-actions' },
          dur,
          h('button', { class: 'quiet', disabled: !state.token, title: noToken, onclick: () => renew(e.id, dur.value.trim()).catch(report), text: 'Renew' }),
          h('button', { class: 'danger', disabled: !state.token, title: noToken, onclick: () => revoke(e.id).catch(report), text: 'Revoke' })) : null));
    });
    fill('exceptions-body', table([['#', 'num'], ['Rule'], ['Scope'], ['Owner'], ['Reason'], ['Status'], ['Expires'], ['Renewals', 'num'], ['Hits', 'num'], ['']], rows));
  }

  function parseScopeInput(text) {
    const scope = {};
    for (const part of text.split(',').map((p) => p.trim()).filter(Boolean)) {
      const at = part.indexOf('=');
      if (at <= 0 || at === part.length - 1) throw new Error('scope "' + part + '" must be dim=value, e.g. model=gpt-4o');
      scope[part.slice(0, at).trim()] = part.slice(at + 1).trim();
    }
    return scope;
  }

  async function createException(ev) {
    ev.preventDefault();
    if (needToken()) return;
    let scope;
    try { scope = parseScopeInput($('ex-scope').value); } catch (e) { exMessage(e.message, false); return; }
    const body = {
      rule: $('ex-rule').value.trim(),
      scope,
      reason: $('ex-reason').value.trim(),
      owner: $('ex-owner').value.trim(),
      for: $('ex-for').value.trim(),
    };
    const ticket = $('ex-ticket').value.trim();
    if (ticket) body.ticket = ticket;
    const button = $('ex-create');
    button.disabled = true;
    const r = await api('/v1/exceptions', { method: 'POST', body, auth: true });
    button.disabled = false;
    if (!r.ok) { exMessage('Not created: ' + r.error, false); return; }
    const e = r.json.exception;
    const warnings = (r.json.warnings || []).join(' ');
    exMessage('Created exception #' + e.id + ', expires ' + relative(toMs(e.expires_at)) + '.' + (warnings ? ' ' + warnings : ''), true);
    for (const id of ['ex-rule', 'ex-scope', 'ex-reason', 'ex-ticket']) $(id).value = '';
    await loadExceptions();
  }

  // --- change events -------------------------------------------------------------

  function kv(value, depth) {
    if (value === null || typeof value !== 'object' || depth > 1) {
      const text = typeof value === 'number' ? fmtNum(value) : typeof value === 'string' ? value : JSON.stringify(value);
      return document.createTextNode(text);
    }
    return h('table', { class: 'kv' }, h('tbody', {}, Object.entries(value).map(([k, v]) =>
      h('tr', {}, h('th', { text: k }), h('td', {}, kv(v, depth + 1))))));
  }

  async function loadChanges() {
    const since = new Date(Date.now() - RANGES[state.range].ms).toISOString();
    const r = await api('/v1/changes?' + new URLSearchParams({ since, limit: '200' }));
    if (!r.ok) { fill('changes-body', errorText('Cannot load change events: ' + r.error)); return; }
    state.changes = r.json.changes || [];
    drawLanes();
    if (!state.changes.length) { fill('changes-body', empty('No change events in this range. Post deploys and model bumps to /recalibrate.')); return; }
    fill('changes-body', h('div', { class: 'changes' }, state.changes.map((c) =>
      h('article', { class: 'change-item' },
        h('header', {},
          h('span', { class: 'badge', text: c.kind }),
          h('strong', { text: fmtTime(c.ts_ms) + ' UTC' }),
          h('span', { class: 'hint', text: scopeText(c.scope) + ' · ' + c.origin })),
        c.note ? h('p', { class: 'note', text: c.note }) : null,
        c.impact ? h('details', {}, h('summary', { text: 'Impact report' }), kv(c.impact, 0))
          : h('div', { class: 'hint', text: 'Impact report pending: it is written once the warm-up after the change is over.' })))));
  }

  // --- ingest health -------------------------------------------------------------

  // Samples of one metric family from Prometheus text: [{labels, value}].
  function samples(text, name) {
    const out = [];
    for (const line of text.split('\n')) {
      if (!line.startsWith(name + '{')) continue;
      const close = line.lastIndexOf('}');
      const labels = {};
      for (const m of line.slice(name.length + 1, close).matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) {
        labels[m[1]] = m[2].replace(/\\n/g, '\n').replace(/\\(["\\])/g, '$1');
      }
      out.push({ labels, value: Number(line.slice(close + 1).trim()) });
    }
    return out;
  }

  function tile(label, value, alarm) {
    return h('div', { class: 'tile' + (alarm ? ' alarm' : '') }, h('div', { class: 'label', text: label }), h('div', { class: 'value', text: value }));
  }

  async function loadIngest() {
    const [stats, metrics] = await Promise.all([api('/v1/stats'), api('/metrics', { raw: true })]);
    if (stats.ok) {
      const st = stats.json;
      fill('stats-body',
        tile('Events stored', fmtInt(st.events)),
        tile('Eval scores', fmtInt(st.evals)),
        tile('Dead letters', fmtInt(st.dead_letters), st.dead_letters > 0),
        tile('Aggregate rows', fmtInt(st.aggregate_rows)),
        tile('Database size', fmtBytes(st.db_bytes)));
      const dbs = st.gateway_dbs || [];
      fill('dbs-body', dbs.length ? table(
        [['Source'], ['Last id', 'num'], ['Rows behind', 'num'], ['Poll errors', 'num'], ['Last success'], ['Last error']],
        dbs.map((d) => h('tr', {},
          h('td', {}, h('code', { text: d.source })),
          h('td', { class: 'num', text: d.last_id === null ? '—' : d.last_id }),
          h('td', { class: 'num', text: d.rows_behind === null ? '—' : fmtInt(d.rows_behind) }),
          h('td', { class: 'num', text: d.poll_errors }),
          h('td', { text: relative(d.last_success_ms) }),
          h('td', { class: d.last_error ? 'error-text' : null, text: d.last_error || '—' })))) : empty('No gateway database sources.'));
    } else {
      fill('stats-body', errorText('Cannot load stats: ' + stats.error));
    }
    if (metrics.ok) {
      const rotations = new Map(samples(metrics.text, 'driftwarden_tail_rotations_total').map((x) => [x.labels.path, x.value]));
      const behind = samples(metrics.text, 'driftwarden_tail_bytes_behind');
      fill('tails-body', behind.length ? table([['File'], ['Bytes behind', 'num'], ['Rotations', 'num']],
        behind.map((b) => h('tr', {},
          h('td', {}, h('code', { text: b.labels.path })),
          h('td', { class: 'num' + (b.value > 0 ? ' error-text' : ''), text: fmtBytes(b.value) }),
          h('td', { class: 'num', text: rotations.get(b.labels.path) || 0 })))) : empty('No tailed files.'));
    } else {
      fill('tails-body', errorText('Cannot load metrics: ' + metrics.error));
    }
    await loadDeadLetters();
  }

  async function loadDeadLetters() {
    if (!state.token) {
      fill('deadletters-body', empty('Enter the API token at the top to see dead letters: they keep (redacted) record text.'));
      return;
    }
    const r = await api('/v1/deadletters?limit=50', { auth: true });
    if (r.status === 401) { fill('deadletters-body', errorText('The daemon refused the token: ' + r.error)); return; }
    if (!r.ok) { fill('deadletters-body', errorText('Cannot load dead letters: ' + r.error)); return; }
    const list = r.json.dead_letters || [];
    fill('deadletters-body', list.length ? table([['Received'], ['Source'], ['Position'], ['Reason'], ['Record']],
      list.map((d) => h('tr', {},
        h('td', { class: 'nowrap', text: fmtTime(d.received_ms) }),
        h('td', {}, h('code', { text: d.source })),
        h('td', { text: d.position }),
        h('td', { text: d.reason }),
        h('td', {}, d.raw.length > 120
          ? h('details', {}, h('summary', {}, h('code', { text: d.raw.slice(0, 120) + '…' })), h('pre', { text: d.raw }))
          : h('code', { text: d.raw }))))) : empty('No dead letters.'));
  }

  // --- refresh -------------------------------------------------------------------

  function report(e) {
    const st = $('status');
    st.textContent = e.message || String(e);
    st.classList.add('error');
  }

  async function refresh() {
    const results = await Promise.allSettled([
      loadScopes(), loadSeries(), loadChanges(), loadAlerts(), loadExceptions(), loadIngest(),
    ]);
    const failed = results.find((x) => x.status === 'rejected');
    const st = $('status');
    if (failed) report(failed.reason);
    else {
      st.textContent = 'Updated ' + new Date().toISOString().slice(11, 19) + ' UTC';
      st.classList.remove('error');
    }
  }

  function readHash() {
    const q = new URLSearchParams(location.hash.slice(1));
    if (q.get('scope')) state.scope = q.get('scope');
    if (RANGES[q.get('range')]) state.range = q.get('range');
  }

  function writeHash() {
    history.replaceState(null, '', '#' + new URLSearchParams({ scope: state.scope, range: state.range }));
  }

  function showToken() {
    $('token').value = state.token;
    $('token').placeholder = state.token ? 'token set for this tab' : 'API token (for changes)';
  }

  function init() {
    readHash();
    laneSkeleton();
    $('range').value = state.range;
    showToken();
    $('scope').addEventListener('change', () => {
      state.scope = $('scope').value;
      writeHash();
      Promise.all([loadSeries(), loadChanges()]).catch(report);
    });
    $('range').addEventListener('change', () => {
      state.range = $('range').value;
      writeHash();
      Promise.all([loadSeries(), loadChanges()]).catch(report);
    });
    $('token-form').addEventListener('submit', (ev) => {
      ev.preventDefault();
      state.token = $('token').value.trim();
      // sessionStorage only: the token leaves with the tab and is never written to disk by us.
      if (state.token) sessionStorage.setItem(TOKEN_KEY, state.token); else sessionStorage.removeItem(TOKEN_KEY);
      showToken();
      exMessage(state.token ? 'Token set for this tab.' : 'Token cleared.', true);
      Promise.all([loadExceptions(), loadDeadLetters()]).catch(report);
    });
    $('token-clear').addEventListener('click', () => {
      state.token = '';
      sessionStorage.removeItem(TOKEN_KEY);
      showToken();
      Promise.all([loadExceptions(), loadDeadLetters()]).catch(report);
    });
    $('alert-state').addEventListener('change', () => loadAlerts().catch(report));
    $('ex-inactive').addEventListener('change', () => loadExceptions().catch(report));
    $('ex-form').addEventListener('submit', (ev) => createException(ev).catch(report));
    refresh();
    setInterval(() => { if (!document.hidden) refresh(); }, REFRESH_MS);
  }

  document.addEventListener('DOMContentLoaded', init);
})();
