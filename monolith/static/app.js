/*
 * Flack's browser client. All data comes from the JSON API (/api/...) and
 * live updates from Socket.IO `updated_model` events, so it works the same
 * whether the monolith or extracted services answer behind the router.
 * Socket.IO is the official client (static/vendor/socket.io-client/), whose
 * global io() is loaded before this file.
 */
(function () {
  "use strict";

  const PING_EVERY_MS = 30000;
  const STORAGE_KEY = "flack.session";
  const TRANSPORTS = ["websocket", "polling"];
  const REFUSED_RETRY_MS = 5000;

  const state = {
    token: null,
    nickname: null,
    users: new Map(),     // id -> user dict
    messages: new Map(),  // id -> message dict
    socket: null,
    pingTimer: null,
  };

  const $ = (id) => document.getElementById(id);

  /* ---------- the API ---------- */

  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  /* Call the API; resolves to the JSON body (or null), rejects with ApiError. */
  async function api(method, path, options) {
    const opts = options || {};
    const headers = { Accept: "application/json" };
    if (opts.body !== undefined) headers["Content-Type"] = "application/json";
    if (opts.basic) {
      // btoa only takes Latin-1: encode the UTF-8 bytes first
      const bytes = new TextEncoder().encode(opts.basic.join(":"));
      headers.Authorization = "Basic " + btoa(String.fromCharCode.apply(null, bytes));
    } else if (opts.token) {
      headers.Authorization = "Bearer " + opts.token;
    }
    let response;
    try {
      response = await fetch(path, {
        method: method,
        headers: headers,
        // the API authenticates by header, never by cookie; and without
        // credentials a 401 carrying a Basic challenge (wrong password) is
        // handed to us instead of opening the browser's own login dialog
        credentials: "omit",
        body: opts.body === undefined ? undefined : JSON.stringify(opts.body),
      });
    } catch (err) {
      throw new ApiError(0, "Cannot reach the server. Check your connection and try again.");
    }
    const text = await response.text();
    let data = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch (err) {
      data = null;  // e.g. an HTML error page from a proxy
    }
    if (!response.ok) {
      const reason = data && data.error ? data.error : response.status + " " + response.statusText;
      throw new ApiError(response.status, reason);
    }
    return data;
  }

  /* ---------- page state ---------- */

  function showError(message) {
    $("error").textContent = message;
    $("error").hidden = !message;
  }

  function showView(loggedIn) {
    $("login-view").hidden = loggedIn;
    $("chat-view").hidden = !loggedIn;
    $("session").hidden = !loggedIn;
    $("me").textContent = state.nickname || "";
  }

  function setConnection(status) {
    const el = $("connection");
    el.textContent = status;
    el.className = "connection " + status.replace(/[^a-z]/g, "");
  }

  function formatTime(epoch) {
    const when = new Date(epoch * 1000);
    return when.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  }

  function isAtBottom(list) {
    return list.scrollHeight - list.scrollTop - list.clientHeight < 40;
  }

  /* ---------- rendering ---------- */

  function renderUsers() {
    const list = $("users");
    const online = Array.from(state.users.values())
      .filter((user) => user.online)
      .sort((a, b) => a.nickname.localeCompare(b.nickname));
    list.replaceChildren(...online.map((user) => {
      const item = document.createElement("li");
      item.className = "user" + (user.nickname === state.nickname ? " me" : "");
      item.dataset.userId = user.id;
      item.textContent = user.nickname;
      return item;
    }));
    $("online-count").textContent = String(online.length);
    $("users-empty").hidden = online.some((user) => user.nickname !== state.nickname);
  }

  function messageElement(message) {
    const author = state.users.get(message.user_id);
    const item = document.createElement("li");
    item.className = "message" + (author && author.nickname === state.nickname ? " mine" : "");
    item.id = "message-" + message.id;
    const meta = document.createElement("div");
    meta.className = "meta";
    const who = document.createElement("span");
    who.className = "author";
    who.textContent = author ? author.nickname : "user " + message.user_id;
    const when = document.createElement("time");
    when.dateTime = new Date(message.created_at * 1000).toISOString();
    when.textContent = formatTime(message.created_at);
    meta.append(who, when);
    const body = document.createElement("div");
    body.className = "body";
    // the server sanitises message html (a handful of inline tags, links
    // with rel=nofollow, and the link-expansion blockquote), so it is
    // rendered as HTML on purpose
    body.innerHTML = message.html;
    item.append(meta, body);
    return item;
  }

  function renderMessages() {
    const list = $("messages");
    const follow = isAtBottom(list);
    const sorted = Array.from(state.messages.values())
      .sort((a, b) => a.created_at - b.created_at || a.id - b.id);
    list.replaceChildren(...sorted.map(messageElement));
    $("messages-empty").hidden = sorted.length > 0;
    if (follow) list.scrollTop = list.scrollHeight;
  }

  /* ---------- data ---------- */

  // counts what the page stores, to tell what it knew before a request left
  let storeCount = 0;
  const storedAt = new WeakMap();  // stored model -> storeCount when stored
  const PUSHED = Infinity;

  /*
   * Store a user or message unless we already hold a newer version.
   * updated_at has one-second resolution, so ties are common: a message and
   * its link-expanded version often share a second, a new user and their
   * first login too. Socket pushes arrive in the server's order, so a pushed
   * version (sent = PUSHED) wins a tie. An HTTP answer (sent = storeCount when
   * its request left) wins a tie only over what was stored before it was
   * sent: anything stored later may be newer than the answer.
   */
  function upsert(map, model, sent) {
    const known = map.get(model.id);
    const age = (model.updated_at || 0) - ((known && known.updated_at) || 0);
    if (!known || age > 0 || (age === 0 && storedAt.get(known) <= sent)) {
      map.set(model.id, model);
      storedAt.set(model, ++storeCount);
    }
  }

  async function fetchMissingAuthors() {
    const missing = new Set();
    for (const message of state.messages.values()) {
      if (!state.users.has(message.user_id)) missing.add(message.user_id);
    }
    for (const id of missing) {
      try {
        const sent = storeCount;
        upsert(state.users, await api("GET", "/api/users/" + id, { token: state.token }), sent);
      } catch (err) {
        // an unknown author is shown as "user <id>"; nothing else to do
      }
    }
  }

  async function loadAll() {
    const sent = storeCount;
    const [users, messages] = await Promise.all([
      api("GET", "/api/users", { token: state.token }),
      api("GET", "/api/messages", { token: state.token }),
    ]);
    users.users.forEach((user) => upsert(state.users, user, sent));
    messages.messages.forEach((message) => upsert(state.messages, message, sent));
    await fetchMissingAuthors();
    renderUsers();
    renderMessages();
  }

  function onUpdatedModel(data) {
    if (!data || !data.model) return;
    if (data.class === "User") {
      upsert(state.users, data.model, PUSHED);
      renderUsers();
      renderMessages();  // a nickname may now be known
    } else if (data.class === "Message") {
      upsert(state.messages, data.model, PUSHED);
      if (!state.users.has(data.model.user_id)) {
        fetchMissingAuthors().then(renderMessages);
      }
      renderMessages();
    }
  }

  /* ---------- live updates ---------- */

  /* Keep us online; the server acks {"error": ...} once the token is refused. */
  function pingUser() {
    const token = state.token;
    state.socket.emit("ping_user", token, (answer) => {
      if (answer && answer.error && state.token === token) {
        leave("Your session has ended (" + answer.error + "). Please log in again.");
      }
    });
  }

  /*
   * The Engine.IO transports to use. By default a WebSocket, falling back to
   * HTTP long-polling where one cannot open (a proxy that refuses upgrades);
   * WebSocket first so that several socketio instances need no sticky
   * sessions. `?transport=polling` or `?transport=websocket` in the page's
   * URL forces one (to try a deployment's long-polling path, for instance).
   */
  function socketTransports() {
    const wanted = new URLSearchParams(window.location.search).get("transport");
    return TRANSPORTS.includes(wanted) ? [wanted] : TRANSPORTS;
  }

  function startSocket() {
    const socket = window.io({
      transports: socketTransports(),
      tryAllTransports: true,
      // back-off with jitter, so a restarted server is not stampeded
      reconnectionDelay: 500,
      reconnectionDelayMax: 10000,
    });
    state.socket = socket;
    socket.on("connect", () => {
      setConnection("live");
      pingUser();
      // catch up on whatever was pushed while no socket listened: during an
      // outage, and on the first connection since the page's first load
      // (someone who logged in meanwhile would otherwise never show online)
      loadAll().catch(handleApiError);
    });
    socket.on("disconnect", () => setConnection("offline"));
    socket.io.on("reconnect_attempt", () => setConnection("reconnecting"));
    socket.on("connect_error", () => {
      setConnection("offline");
      // a refusal by the server (not a network failure) is not retried by the
      // client itself: try again later, as long as this socket is still ours
      if (!socket.active) {
        setTimeout(() => {
          if (state.socket === socket) socket.connect();
        }, REFUSED_RETRY_MS);
      }
    });
    socket.on("updated_model", onUpdatedModel);
    state.pingTimer = setInterval(() => {
      if (socket.connected) pingUser();
    }, PING_EVERY_MS);
  }

  function stopSocket() {
    clearInterval(state.pingTimer);
    if (state.socket) state.socket.disconnect();
    state.socket = null;
    setConnection("offline");
  }

  /* ---------- session ---------- */

  async function enter(nickname, token) {
    state.nickname = nickname;
    state.token = token;
    sessionStorage.setItem(STORAGE_KEY, JSON.stringify({ nickname: nickname, token: token }));
    showError("");
    showView(true);
    await loadAll();
    startSocket();
    $("source").focus();
  }

  function leave(message) {
    stopSocket();
    state.token = null;
    state.users.clear();
    state.messages.clear();
    sessionStorage.removeItem(STORAGE_KEY);
    renderUsers();
    renderMessages();
    showView(false);
    showError(message || "");
  }

  function handleApiError(err) {
    if (err instanceof ApiError && err.status === 401 && state.token) {
      leave("Your session has expired (" + err.message + "). Please log in again.");
    } else {
      showError(err.message);
    }
  }

  async function logIn(event) {
    event.preventDefault();
    const nickname = $("nickname").value.trim();
    const password = $("password").value;
    const button = $("login");
    button.disabled = true;
    showError("");
    try {
      try {
        await api("POST", "/api/users", { body: { nickname: nickname, password: password } });
      } catch (err) {
        // 400 most likely means the nickname is taken: then it is a log in
        if (!(err instanceof ApiError) || err.status !== 400) throw err;
      }
      const answer = await api("POST", "/api/tokens", { basic: [nickname, password] });
      $("password").value = "";
      await enter(nickname, answer.token);
    } catch (err) {
      const reason = err instanceof ApiError && err.status === 401
        ? "wrong password for \u201c" + nickname + "\u201d (" + err.message + ")."
        : err.message;
      leave("Could not log in: " + reason);
    } finally {
      button.disabled = false;
    }
  }

  async function logOut() {
    $("logout").disabled = true;
    try {
      // revoke first: using the token marks us online, and closing the
      // socket afterwards is what marks us offline for everyone
      await api("DELETE", "/api/tokens", { token: state.token });
    } catch (err) {
      // the token is dropped from this page either way; an expired one is fine
    } finally {
      $("logout").disabled = false;
      leave("");
    }
  }

  async function sendMessage(event) {
    event.preventDefault();
    const box = $("source");
    const source = box.value.trim();
    if (!source) return;
    $("send").disabled = true;
    try {
      const sent = storeCount;
      const message = await api("POST", "/api/messages", { token: state.token, body: { source: source } });
      // what was typed while this one was sending is the next message: keep it
      if (box.value.trim() === source) box.value = "";
      showError("");
      if (message && message.id !== undefined) {
        upsert(state.messages, message, sent);
        renderMessages();
      }
      $("messages").scrollTop = $("messages").scrollHeight;
    } catch (err) {
      handleApiError(err);
    } finally {
      $("send").disabled = false;
      box.focus();
    }
  }

  function sendOnEnter(event) {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      $("composer").requestSubmit();
    }
  }

  async function resume() {
    let saved = null;
    try {
      saved = JSON.parse(sessionStorage.getItem(STORAGE_KEY) || "null");
    } catch (err) {
      saved = null;
    }
    if (!saved || !saved.token) {
      showView(false);
      return;
    }
    try {
      await enter(saved.nickname, saved.token);
    } catch (err) {
      leave(err instanceof ApiError && err.status === 401 ? "" : err.message);
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("login-form").addEventListener("submit", logIn);
    $("logout").addEventListener("click", logOut);
    $("composer").addEventListener("submit", sendMessage);
    $("source").addEventListener("keydown", sendOnEnter);
    resume();
  });
})();
