// Live events: Server-Sent Events read with fetch() and a ReadableStream, because
// EventSource cannot send an Authorization header (and a token must never go in a URL).
// Reconnects with a growing, jittered delay to this origin (behind the load balancer:
// whichever node answers), sending Last-Event-ID so nothing in between is missed. A stream
// silent for longer than SILENT_MS (the server sends a comment every 2 s) is abandoned.
const SILENT_MS = 7000;
const MAX_BACKOFF_MS = 8000;

export class LiveStream {
  constructor({ token, onEvent, onState, onUnauthorized }) {
    this.token = token;
    this.onEvent = onEvent;
    this.onState = onState;
    this.onUnauthorized = onUnauthorized;
    this.lastId = null;
    this.stopped = false;
    this.controller = null;
  }

  start(lastId) {
    this.lastId = lastId ?? null;
    this.run();
  }

  stop() {
    this.stopped = true;
    if (this.controller) this.controller.abort();
  }

  async run() {
    let backoff = 250;
    while (!this.stopped) {
      const ok = await this.once();
      if (this.stopped) return;
      this.onState(false);
      if (ok) backoff = 250;
      const wait = backoff * (1 + Math.random() / 2);
      backoff = Math.min(backoff * 2, MAX_BACKOFF_MS);
      await new Promise((resolve) => setTimeout(resolve, wait));
    }
  }

  // One connection; true when it was up for a while (the delay starts again from short).
  async once() {
    const controller = new AbortController();
    this.controller = controller;
    let timer = null;
    const arm = () => {
      clearTimeout(timer);
      timer = setTimeout(() => controller.abort(), SILENT_MS);
    };
    const headers = { Authorization: `Bearer ${this.token}`, Accept: 'text/event-stream' };
    if (this.lastId !== null) headers['Last-Event-ID'] = String(this.lastId);
    let connected = false;
    try {
      arm();
      const r = await fetch('/api/v1/events/stream', {
        headers, signal: controller.signal, cache: 'no-store', credentials: 'omit',
      });
      if (r.status === 401) {
        this.stopped = true;
        this.onUnauthorized();
        return false;
      }
      if (!r.ok || !r.body) return false;
      connected = true;
      this.onState(true);
      const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = '';
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        arm();
        buffer += value.replace(/\r\n?/g, '\n');
        let end;
        while ((end = buffer.indexOf('\n\n')) >= 0) {
          this.dispatch(buffer.slice(0, end));
          buffer = buffer.slice(end + 2);
        }
      }
    } catch (e) {
      // aborted (silent too long, or stopped) or the node went away: reconnect
    } finally {
      clearTimeout(timer);
    }
    return connected;
  }

  dispatch(block) {
    let data = '';
    let id = null;
    for (const line of block.split('\n')) {
      if (line.startsWith(':')) continue;
      const colon = line.indexOf(':');
      const field = colon < 0 ? line : line.slice(0, colon);
      const value = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
      if (field === 'data') data += (data ? '\n' : '') + value;
      else if (field === 'id') id = value;
    }
    if (id !== null && /^\d+$/.test(id)) this.lastId = Number(id);
    if (!data) return;
    try {
      this.onEvent(JSON.parse(data));
    } catch (e) {
      // not JSON: ignore it
    }
  }
}
