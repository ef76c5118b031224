#!/usr/bin/env node
// A robobus client in Node.js that knows the bus only from its AsyncAPI document
// (docs/asyncapi.json, or `robobus schema --asyncapi`). It sends one instruction with an MQTT 5
// response topic and correlation data, follows the task to its end (on the response topic when
// the brain answers there, and on the task's status topic), and decodes every message it sees
// under the prefix (msgpack or JSON) and validates it against the schema of its channel.
//
//   node client.mjs --url mqtt://127.0.0.1:1883 --text "bring the apple to the office desk"
//
// Prints one JSON summary line; exit status 0 when the task ended `done` and every message
// matched its schema, 1 otherwise.
//
// On a bus secured by `robobus secure init` (mqtts, an account per client), it connects with
// ROBOBUS_MQTT_USERNAME and ROBOBUS_MQTT_PASSWORD_FILE (or --username, --password-file) and
// --ca DIR/ca.crt, sends on its account's own topic P/instructions/ACCOUNT (the only one the
// ACL lets it instruct on) and asks for replies on its reply inbox P/_inbox/CLIENT_ID/.
import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";

import { decode, encode } from "@msgpack/msgpack";
import AjvModule from "ajv";
import mqtt from "mqtt";

const Ajv = AjvModule.default ?? AjvModule;
const FINAL = new Set(["done", "failed", "cancelled"]);

const { values: opts } = parseArgs({
  options: {
    url: { type: "string", default: "mqtt://127.0.0.1:1883" },
    prefix: { type: "string", default: "robobus" },
    text: { type: "string", default: "bring the apple to the office desk" },
    codec: { type: "string", default: "msgpack" }, // how this client writes: msgpack or json
    asyncapi: { type: "string", default: new URL("../../docs/asyncapi.json", import.meta.url).pathname },
    timeout: { type: "string", default: "60" },
    username: { type: "string", default: process.env.ROBOBUS_MQTT_USERNAME ?? "" },
    "password-file": { type: "string", default: process.env.ROBOBUS_MQTT_PASSWORD_FILE ?? "" },
    ca: { type: "string", default: "" }, // the CA certificate of an mqtts:// broker
  },
});

/** Channels of the document as [regex over topics, message name, address], under `prefix`. */
function channelsOf(doc, prefix) {
  const docPrefix = doc.servers.mosquitto.variables.prefix.default;
  const out = [];
  for (const channel of Object.values(doc.channels)) {
    if (!channel.address) continue; // a reply channel: its address is the request's response topic
    const address = prefix + channel.address.slice(docPrefix.length);
    const pattern = address.split("/").map((level) =>
      /^\{.+\}$/.test(level) ? "[^/]+" : level.replace(/[.*+?^$()|[\]\\]/g, "\\$&"));
    const [name] = Object.keys(channel.messages);
    out.push([new RegExp(`^${pattern.join("/")}$`), name, address]);
  }
  return out;
}

/** Request channel address -> the messages its replies carry (operations with a `reply`). */
function repliesOf(doc, prefix) {
  const docPrefix = doc.servers.mosquitto.variables.prefix.default;
  const out = new Map();
  for (const op of Object.values(doc.operations)) {
    if (!op.reply) continue;
    const request = doc.channels[op.channel.$ref.split("/").pop()];
    const names = op.reply.messages.map((m) => m.$ref.split("/").pop());
    out.set(prefix + request.address.slice(docPrefix.length), names);
  }
  return out;
}

/** A payload as data: by its MQTT 5 Content Type, else JSON when it looks like it, else msgpack. */
function decodePayload(payload, contentType) {
  const looksJson = payload.length > 0 && (payload[0] === 0x7b || payload[0] === 0x5b);
  if (contentType === "application/json" || (!contentType && looksJson)) {
    return { encoding: "json", data: JSON.parse(payload.toString("utf8")) };
  }
  return { encoding: "msgpack", data: decode(payload) };
}

function encodePayload(value) {
  return opts.codec === "json" ? Buffer.from(JSON.stringify(value)) : Buffer.from(encode(value));
}

async function main() {
  const doc = JSON.parse(readFileSync(opts.asyncapi, "utf8"));
  const ajv = new Ajv({ strict: false, allErrors: true });
  // the payload schemas alone (their $refs point into #/components/schemas)
  ajv.addSchema({ $id: "asyncapi", components: { schemas: doc.components.schemas } });
  const validate = (name) => ajv.getSchema(`asyncapi#/components/schemas/${name}`);
  const channels = channelsOf(doc, opts.prefix);
  const replies = repliesOf(doc, opts.prefix);
  const clientId = `node-${randomBytes(4).toString("hex")}`;
  const taskId = `node-${randomBytes(3).toString("hex")}`;
  // an account reads its own reply inbox only; otherwise a topic outside the prefix (one copy)
  const replyTopic = opts.username ? `${opts.prefix}/_inbox/${clientId}/reply` : `replies/${clientId}`;
  // an account instructs on its own topic (issue 13: the brain's rate limit counts the account)
  const instructions = opts.username
    ? `${opts.prefix}/instructions/${opts.username}` : `${opts.prefix}/instructions`;
  const pending = new Map(); // response topic of a request seen -> the messages of its replies
  pending.set(replyTopic, replies.get(`${opts.prefix}/instructions`));
  const correlation = randomBytes(8);
  const summary = {
    task_id: taskId, final: null, reason: null, via: null, statuses: [], replies: 0,
    correlated: 0, seen: 0, valid: 0, invalid: [], encodings: {}, types: {}, unknown: [],
    unmatched_replies: 0,
  };

  const auth = opts.username ? {
    username: opts.username,
    password: readFileSync(opts["password-file"], "utf8").trim(),
  } : {};
  const tls = opts.ca ? { ca: readFileSync(opts.ca) } : {};
  const url = opts.url.split("?")[0]; // robobus URLs carry ?ca=...; mqtt.js takes it as an option
  const client = await mqtt.connectAsync(url, { protocolVersion: 5, clientId, clean: true, ...auth, ...tls });
  let finish;
  const ended = new Promise((resolve) => { finish = resolve; });
  client.on("message", (topic, payload, packet) => {
    const props = packet.properties ?? {};
    if (topic === replyTopic) {
      summary.replies += 1;
      if (props.correlationData && Buffer.compare(props.correlationData, correlation) === 0) {
        summary.correlated += 1;
      }
    }
    const channel = channels.find(([re]) => re.test(topic));
    if (channel && props.responseTopic && replies.has(channel[2])) {
      pending.set(props.responseTopic, replies.get(channel[2]));
    }
    const names = channel ? [channel[1]] : pending.get(topic);
    if (!names || payload.length === 0) {
      if (!names && payload.length && topic.includes("/_inbox/")) summary.unmatched_replies += 1;
      else if (!names && payload.length) summary.unknown.push(topic);
      return; // a reply to a request sent before we listened, or a cleared retained value
    }
    summary.seen += 1;
    let decoded;
    try {
      decoded = decodePayload(payload, props.contentType);
    } catch (err) {
      if (names[0] === "Instruction") return; // plain-text instructions are allowed
      summary.invalid.push({ topic, error: `undecodable: ${err.message}` });
      return;
    }
    summary.encodings[decoded.encoding] = (summary.encodings[decoded.encoding] ?? 0) + 1;
    // a reply topic may carry one of several messages (a status or a refusal): the first that fits
    const name = names.find((n) => validate(n)(decoded.data));
    if (name) summary.valid += 1;
    else summary.invalid.push({ topic, message: names, errors: validate(names[0]).errors?.slice(0, 3) });
    summary.types[name ?? names[0]] = (summary.types[name ?? names[0]] ?? 0) + 1;
    const status = decoded.data;
    if (name === "TaskStatus" && status.task_id === taskId) {
      const via = topic === replyTopic ? "reply" : "tasks";
      summary.statuses.push(`${via}:${status.status}`);
      if (FINAL.has(status.status) && !summary.final) {
        Object.assign(summary, { final: status.status, reason: status.reason ?? null, via });
        setTimeout(finish, 300); // let the other path's copy of the end arrive too
      }
    }
  });
  const own = replyTopic.startsWith(`${opts.prefix}/`) ? {} : { [replyTopic]: { qos: 1 } };
  await client.subscribeAsync({ [`${opts.prefix}/#`]: { qos: 1 }, ...own }); // one copy of each
  const instruction = { text: opts.text, task_id: taskId, source: clientId };
  await client.publishAsync(instructions, encodePayload(instruction), {
    qos: 1,
    properties: {
      responseTopic: replyTopic, correlationData: correlation,
      contentType: opts.codec === "json" ? "application/json" : "application/msgpack",
      ...(opts.codec === "json" ? { payloadFormatIndicator: true } : {}),
    },
  });
  const timer = setTimeout(finish, Number(opts.timeout) * 1000);
  await ended;
  clearTimeout(timer);
  await client.endAsync();
  summary.unknown = [...new Set(summary.unknown)];
  console.log(JSON.stringify(summary));
  process.exit(summary.final === "done" && summary.invalid.length === 0 ? 0 : 1);
}

main().catch((err) => {
  console.error(err);
  process.exit(2);
});
