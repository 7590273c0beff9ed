/*
 * A small Socket.IO client: Engine.IO v4 / Socket.IO v5 over a plain
 * browser WebSocket, default namespace only, no binary packets.
 *
 * Wire format (checked against python-engineio 4 / python-socketio 5):
 *   Engine.IO packets are one WebSocket text frame each, the first
 *   character is the type: 0 open, 1 close, 2 ping, 3 pong, 4 message.
 *   A "4" carries a Socket.IO packet whose first character is its type:
 *   0 connect, 1 disconnect, 2 event, 3 ack, 4 connect error;
 *   then an optional "/namespace," and an optional ack id, then JSON.
 *   So: server "0{sid,pingInterval,pingTimeout}", client "40",
 *   server "40{"sid":...}", events "42["name",...args]", and the server's
 *   ping "2" is answered with "3".
 *
 * Usage:
 *   const socket = new SocketIO();
 *   socket.on("connect", () => ...);
 *   socket.on("updated_model", (data) => ...);
 *   socket.connect();
 *   socket.emit("ping_user", token);
 */
(function (global) {
  "use strict";

  const EIO = { OPEN: "0", CLOSE: "1", PING: "2", PONG: "3", MESSAGE: "4" };
  const SIO = { CONNECT: "0", DISCONNECT: "1", EVENT: "2", ACK: "3", CONNECT_ERROR: "4" };
  const MAX_BUFFERED = 100;

  function defaultUrl() {
    const scheme = global.location.protocol === "https:" ? "wss:" : "ws:";
    return scheme + "//" + global.location.host + "/socket.io/?EIO=4&transport=websocket";
  }

  /* Split a Socket.IO packet body (after its type) into ack id and JSON data. */
  function parseSocketPacket(body) {
    let rest = body;
    if (rest.startsWith("/")) {
      // only the default namespace is used; drop "/nsp," if a server sends it
      const comma = rest.indexOf(",");
      rest = comma === -1 ? "" : rest.slice(comma + 1);
    }
    const match = /^(\d*)([\s\S]*)$/.exec(rest);
    const id = match[1] === "" ? null : Number(match[1]);
    const data = match[2] === "" ? null : JSON.parse(match[2]);
    return { id: id, data: data };
  }

  class SocketIO {
    constructor(options) {
      const opts = options || {};
      this.url = opts.url || defaultUrl();
      this.minDelay = opts.minDelay || 500;
      this.maxDelay = opts.maxDelay || 10000;
      this.connected = false;
      this.handlers = {};
      this.acks = {};
      this.nextAckId = 0;
      this.buffer = [];
      this.attempts = 0;
      this.ws = null;
      this.wanted = false;
      this.reconnectTimer = null;
      this.pingWatchdog = null;
      this.pingDeadline = 0;
    }

    /* Register a handler for a server event or for connect/disconnect/connect_error. */
    on(name, handler) {
      (this.handlers[name] = this.handlers[name] || []).push(handler);
      return this;
    }

    fire(name, args) {
      for (const handler of this.handlers[name] || []) {
        try {
          handler.apply(null, args);
        } catch (err) {
          // one broken handler must not stop the others or the socket
          console.error("socket.io handler for " + name + " failed", err);
        }
      }
    }

    /* Open the connection; it is re-opened with back-off until disconnect(). */
    connect() {
      this.wanted = true;
      if (!this.ws) this.open();
      return this;
    }

    /* Close the connection for good (no reconnection). */
    disconnect() {
      this.wanted = false;
      clearTimeout(this.reconnectTimer);
      this.buffer = [];
      if (this.ws) {
        if (this.connected) this.sendRaw(EIO.MESSAGE + SIO.DISCONNECT);
        this.ws.close();
      }
    }

    /* Send an event; a trailing function argument receives the server's ack. */
    emit(name) {
      const args = Array.prototype.slice.call(arguments, 1);
      let id = "";
      if (args.length && typeof args[args.length - 1] === "function") {
        id = String(this.nextAckId++);
        this.acks[id] = args.pop();
      }
      const frame = EIO.MESSAGE + SIO.EVENT + id + JSON.stringify([name].concat(args));
      if (this.connected) {
        this.sendRaw(frame);
      } else if (this.buffer.length < MAX_BUFFERED) {
        // like socket.io's client: events emitted while offline go out on connect
        this.buffer.push(frame);
      }
      return this;
    }

    open() {
      let ws;
      try {
        ws = new WebSocket(this.url);
      } catch (err) {
        this.scheduleReconnect();
        return;
      }
      this.ws = ws;
      ws.onmessage = (event) => this.onFrame(event.data);
      ws.onclose = () => this.onClose(ws);
      ws.onerror = () => {
        // an error is always followed by close, which does the work
      };
    }

    sendRaw(frame) {
      if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(frame);
    }

    onFrame(frame) {
      if (typeof frame !== "string" || frame.length === 0) return;  // binary: unsupported
      const type = frame[0];
      const body = frame.slice(1);
      if (type === EIO.OPEN) {
        const handshake = JSON.parse(body);
        this.pingDeadline = (handshake.pingInterval || 25000) + (handshake.pingTimeout || 20000);
        this.armWatchdog();
        this.sendRaw(EIO.MESSAGE + SIO.CONNECT);
      } else if (type === EIO.PING) {
        this.armWatchdog();
        this.sendRaw(EIO.PONG + body);
      } else if (type === EIO.CLOSE) {
        this.ws.close();
      } else if (type === EIO.MESSAGE) {
        this.onPacket(body);
      }
    }

    onPacket(packet) {
      const type = packet[0];
      let parsed;
      try {
        parsed = parseSocketPacket(packet.slice(1));
      } catch (err) {
        console.error("socket.io: bad packet", packet);
        return;
      }
      if (type === SIO.CONNECT) {
        this.connected = true;
        this.attempts = 0;
        const pending = this.buffer;
        this.buffer = [];
        pending.forEach((frame) => this.sendRaw(frame));
        this.fire("connect", [parsed.data]);
      } else if (type === SIO.EVENT && Array.isArray(parsed.data)) {
        this.fire(parsed.data[0], parsed.data.slice(1));
        if (parsed.id !== null) this.sendRaw(EIO.MESSAGE + SIO.ACK + parsed.id + "[]");
      } else if (type === SIO.ACK && parsed.id !== null) {
        const callback = this.acks[parsed.id];
        delete this.acks[parsed.id];
        if (callback) callback.apply(null, parsed.data || []);
      } else if (type === SIO.CONNECT_ERROR) {
        this.fire("connect_error", [parsed.data]);
        this.ws.close();  // retried with back-off
      } else if (type === SIO.DISCONNECT) {
        // the server sent us away on purpose: do not come straight back
        this.wanted = false;
        this.ws.close();
      }
    }

    /* Close a connection whose pings stopped: the network died silently. */
    armWatchdog() {
      clearTimeout(this.pingWatchdog);
      const ws = this.ws;
      this.pingWatchdog = setTimeout(() => ws.close(), this.pingDeadline);
    }

    onClose(ws) {
      if (ws !== this.ws) return;
      clearTimeout(this.pingWatchdog);
      const wasConnected = this.connected;
      this.ws = null;
      this.connected = false;
      this.acks = {};
      if (wasConnected) this.fire("disconnect", [this.wanted ? "transport close" : "client disconnect"]);
      if (this.wanted) this.scheduleReconnect();
    }

    scheduleReconnect() {
      // exponential back-off with jitter, so a restarted server is not stampeded
      const base = Math.min(this.maxDelay, this.minDelay * Math.pow(2, this.attempts));
      const delay = base / 2 + Math.random() * base / 2;
      this.attempts += 1;
      this.fire("reconnecting", [this.attempts, delay]);
      clearTimeout(this.reconnectTimer);
      this.reconnectTimer = setTimeout(() => {
        if (this.wanted && !this.ws) this.open();
      }, delay);
    }
  }

  global.SocketIO = SocketIO;
})(window);
