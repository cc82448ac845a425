// dispatcher console: the only script (served from /console/static, CSP script-src 'self').
// Pages work without it; it adds confirmations and live updates.
// Live updates: any page opts in with data-live-list / data-live-refresh="<fragment url>" /
// data-live-state attributes (described before the live block, below; api/console/live.py serves it).
"use strict";

// Forms that change something important ask first: <form data-confirm="Revoke this key?">.
document.addEventListener("submit", (event) => {
  const form = event.target;
  if (form instanceof HTMLFormElement && form.dataset.confirm && !window.confirm(form.dataset.confirm)) {
    event.preventDefault();
  }
});

// Live updates (the live view; any page can opt in). The server streams Server-Sent Events from
// <base>/live/stream (base: /console, or /portal/{token} in a portal), fed by LISTEN/NOTIFY:
//   event: event    data: one server-rendered, escaped <tr> of a new event
//   event: outcome  data: one <tr> of a new delivery request's outcome
//   event: change   data: {"events": n, "outcomes": n, "callbacks": ["cb_1", ...]} after each batch
// A page opts in with attributes; the stream opens only when one of them is present:
//   data-live-list="events|outcomes"  a <tbody> (or list): new rows go first, at most data-live-max;
//                                      an element data-live-empty="<same kind>" goes when one arrives.
//   data-live-refresh="<url>"          refetched (a same-origin HTML fragment, rendered and escaped by
//                                      the server) and its content replaced after each change; with
//                                      data-live-callback="cb_12" only on outcomes of that callback,
//                                      with data-live-on="events" or "outcomes" only on those.
//   data-live-state                    (role=status, aria-live) shows "Live" / "Reconnecting…".
//   data-live-stream="<url>"           optional: the stream's URL; data-live-after: where it starts.
// EventSource reconnects by itself and resumes after the last message (Last-Event-ID); without this
// script, or while the stream is down, every page still shows what the server rendered.
(() => {
  const lists = document.querySelectorAll("[data-live-list]");
  const refreshers = document.querySelectorAll("[data-live-refresh]");
  if ((!lists.length && !refreshers.length) || !("EventSource" in window)) {
    return;
  }
  const holder = document.querySelector("[data-live-stream]");
  const base = (window.location.pathname.match(/^\/(console|portal\/[^/]+)/) || ["/console"])[0];
  let url = holder ? holder.dataset.liveStream : base + "/live/stream";
  if (holder && holder.dataset.liveAfter) {
    url += (url.includes("?") ? "&" : "?") + "after=" + encodeURIComponent(holder.dataset.liveAfter);
  }
  const show = (state, text) => {
    document.querySelectorAll("[data-live-state]").forEach((el) => {
      el.dataset.state = state;
      el.textContent = text;
    });
  };

  const add = (kind) => (message) => {
    const list = document.querySelector(`[data-live-list="${kind}"]`);
    if (!list) {
      return;
    }
    const template = document.createElement("template");
    template.innerHTML = message.data;
    const row = template.content.firstElementChild;
    if (!row || (row.id && document.getElementById(row.id))) {
      return; // already shown (the page and the stream may overlap)
    }
    list.prepend(row);
    document.querySelectorAll(`[data-live-empty="${kind}"]`).forEach((el) => el.remove());
    const max = Number(list.dataset.liveMax || 100);
    while (list.children.length > max) {
      list.lastElementChild.remove();
    }
  };

  const busy = new WeakMap(); // element -> "running" | "again"
  const refresh = async (el) => {
    if (busy.get(el)) {
      busy.set(el, "again");
      return;
    }
    const target = new URL(el.dataset.liveRefresh, window.location.href);
    if (target.origin !== window.location.origin) {
      return;
    }
    busy.set(el, "running");
    try {
      const answer = await fetch(target, { credentials: "same-origin", headers: { Accept: "text/html" } });
      if (answer.ok) {
        el.innerHTML = await answer.text();
      }
    } catch (_) {
      // the next change tries again
    }
    const again = busy.get(el) === "again";
    busy.delete(el);
    if (again) {
      refresh(el);
    }
  };
  const changed = (message) => {
    const change = JSON.parse(message.data);
    refreshers.forEach((el) => {
      const only = el.dataset.liveOn;
      if (only && !change[only]) {
        return;
      }
      if (el.dataset.liveCallback && !change.callbacks.includes(el.dataset.liveCallback)) {
        return;
      }
      refresh(el);
    });
  };

  const source = new EventSource(url, { withCredentials: true });
  show("connecting", "Connecting…");
  let opened = false;
  source.addEventListener("open", () => {
    show("live", "Live: new events and outcomes appear as they happen.");
    // A stream opened without a cursor starts where the database is now: catch up once with what
    // changed between the page's rendering and this moment (later changes come from the stream).
    if (!opened && !(holder && holder.dataset.liveAfter)) {
      refreshers.forEach((el) => refresh(el));
    }
    opened = true;
  });
  source.addEventListener("error", () => {
    if (source.readyState === EventSource.CLOSED) {
      show("closed", "Disconnected (the session may have ended). Reload the page.");
    } else {
      show("reconnecting", "Reconnecting…");
    }
  });
  source.addEventListener("event", add("events"));
  source.addEventListener("outcome", add("outcomes"));
  source.addEventListener("change", changed);
})();
