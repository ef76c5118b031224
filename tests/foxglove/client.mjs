// A Foxglove WebSocket client (@foxglove/ws-protocol) for the robobus foxglove bridge test.
// It subscribes to the named topics, decodes what arrives (JSON channels as JSON, protobuf ones
// with the descriptor set the server advertises), then sends bad input (a frame that is not
// JSON, a subscription to a channel that does not exist) and checks that messages still flow.
// Prints one JSON line per decoded message, then a summary line {"summary": ...}.
//
// node client.mjs --url ws://127.0.0.1:PORT --topic T [--topic T2 ...] [--latched T3 ...]
//                 --count N --timeout S
// --topic: N messages before the bad input, one after; --latched: one message before.

import wsProtocol from "@foxglove/ws-protocol";
import protobuf from "protobufjs";
import descriptor from "protobufjs/ext/descriptor/index.js";
import { WebSocket as NodeWebSocket } from "ws";

const { FoxgloveClient } = wsProtocol; // a CommonJS package

function parseArgs(argv) {
  const args = { topics: [], latched: [], count: 3, timeout: 30 };
  for (let i = 0; i < argv.length; i += 2) {
    const [key, value] = [argv[i], argv[i + 1]];
    if (key === "--url") args.url = value;
    else if (key === "--topic") args.topics.push(value);
    else if (key === "--latched") args.latched.push(value); // one message is enough
    else if (key === "--count") args.count = Number(value);
    else if (key === "--timeout") args.timeout = Number(value);
    else throw new Error(`unknown argument ${key}`);
  }
  return args;
}

function decoderFor(channel) {
  if (channel.encoding === "json") {
    const text = new TextDecoder();
    return (view) => JSON.parse(text.decode(view));
  }
  if (channel.encoding === "protobuf") {
    const bytes = Buffer.from(channel.schema, "base64");
    const root = protobuf.Root.fromDescriptor(descriptor.FileDescriptorSet.decode(bytes));
    const type = root.lookupType(channel.schemaName);
    return (view) => type.toObject(type.decode(new Uint8Array(view.buffer, view.byteOffset,
      view.byteLength)), { longs: Number, defaults: true });
  }
  throw new Error(`no decoder for ${channel.encoding} on ${channel.topic}`);
}

const args = parseArgs(process.argv.slice(2));
const WS = globalThis.WebSocket ?? NodeWebSocket; // Node 20 has no global WebSocket
// The SDK's server accepts only "foxglove.sdk.v1" (foxglove/ros-foxglove-bridge#382), the same
// protocol as ws-protocol's "foxglove.websocket.v1" under a new name (lichtblick-suite/lichtblick
// #819); FoxgloveClient leaves the subprotocol to the socket since 0.7.5 (foxglove/ws-protocol#916).
const ws = new WS(args.url, ["foxglove.sdk.v1"]);
const client = new FoxgloveClient({ ws });
const subs = new Map(); // subscription id -> {topic, decode}
const wanted = [...args.topics, ...args.latched];
const counts = Object.fromEntries(wanted.map((t) => [t, 0]));
const after = Object.fromEntries(args.topics.map((t) => [t, 0]));
const summary = { serverInfo: null, advertised: [], schemas: {}, errors: [], statuses: [] };
let badInputSent = false;

const timer = setTimeout(() => finish(1, "timeout"), args.timeout * 1000);

function finish(code, why) {
  clearTimeout(timer);
  summary.counts = counts;
  summary.after = after;
  summary.result = why;
  console.log(JSON.stringify({ summary }));
  client.close();
  process.exit(code);
}

function sendBadInput() {
  badInputSent = true;
  ws.send("{this is not json"); // a malformed text frame
  ws.send(new Uint8Array([0xee, 1, 2, 3])); // a binary frame with an unknown opcode
  ws.send(JSON.stringify({ op: "subscribe", subscriptions: [{ id: 77, channelId: 987654 }] }));
  for (const t of args.topics) after[t] = 0;
}

client.on("serverInfo", (info) => { summary.serverInfo = info.name; });
client.on("status", (status) => summary.statuses.push({ level: status.level, message: status.message }));
client.on("error", (err) => summary.errors.push(String(err)));
client.on("close", () => { if (!summary.result) finish(1, "closed"); });
client.on("advertise", (channels) => {
  for (const channel of channels) {
    summary.advertised.push(channel.topic);
    if (!wanted.includes(channel.topic)) continue;
    summary.schemas[channel.topic] = { name: channel.schemaName, encoding: channel.encoding,
      schemaEncoding: channel.schemaEncoding };
    const id = client.subscribe(channel.id);
    subs.set(id, { topic: channel.topic, decode: decoderFor(channel) });
  }
});
client.on("message", ({ subscriptionId, data }) => {
  const sub = subs.get(subscriptionId);
  if (!sub) return;
  const message = sub.decode(data);
  const phase = badInputSent ? "after" : "before";
  console.log(JSON.stringify({ topic: sub.topic, phase, message }));
  (badInputSent ? after : counts)[sub.topic] += 1;
  const enough = args.topics.every((t) => counts[t] >= args.count)
    && args.latched.every((t) => counts[t] >= 1);
  if (!badInputSent && enough) sendBadInput();
  if (badInputSent && summary.statuses.length >= 3 && args.topics.every((t) => after[t] >= 1)) {
    finish(0, "ok");
  }
});
