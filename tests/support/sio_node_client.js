// The official socket.io-client under Node, for tests: connect, wait for one
// `updated_model` event, print one JSON line with what happened, exit.
//
//   node sio_node_client.js MODULE_DIR URL polling|default TIMEOUT_MS
//
// Prints {"ready": true} once connected (the test then makes the event happen).
// Cookies are kept (withCredentials), as a browser would keep Traefik's
// sticky cookie.
const [moduleDir, url, mode, timeoutMs] = process.argv.slice(2);
const { io } = require(moduleDir + "/node_modules/socket.io-client");

const options = { reconnection: false, timeout: 5000, withCredentials: true };
if (mode === "polling") options.transports = ["polling"];
const socket = io(url, options);
const result = { connected: false, transport: null, events: 0, errors: [] };

function finish(code) {
  result.transport = socket.io.engine ? socket.io.engine.transport.name : null;
  console.log(JSON.stringify(result));
  socket.close();
  process.exit(code);
}

socket.on("connect", () => {
  result.connected = true;
  console.log(JSON.stringify({ ready: true }));
});
socket.on("connect_error", (error) => {
  result.errors.push("connect_error: " + error.message);
  finish(1);
});
socket.on("disconnect", (reason) => {
  if (reason !== "io client disconnect") result.errors.push("disconnect: " + reason);
});
socket.on("updated_model", () => {
  result.events += 1;
  // stay a moment: more polls (or the upgrade) must keep reaching the same instance
  setTimeout(() => finish(result.errors.length ? 1 : 0), 1500);
});
setTimeout(() => {
  result.errors.push("timeout");
  finish(1);
}, Number(timeoutMs));
