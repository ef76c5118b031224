// Validate an AsyncAPI document with the AsyncAPI project's own parser (@asyncapi/parser).
// Usage: node validate_asyncapi.mjs FILE. Prints one JSON line: the diagnostics and what the
// parsed document lists (channel addresses, message names); exits 1 on any error diagnostic.
import { readFileSync } from "node:fs";
import { Parser } from "@asyncapi/parser";

const text = readFileSync(process.argv[2], "utf8");
const { document, diagnostics } = await new Parser().parse(text);
const SEVERITY = ["error", "warning", "info", "hint"];
const found = diagnostics.map((d) => ({
  severity: SEVERITY[d.severity], code: d.code, message: d.message, path: d.path.join("."),
}));
const summary = { diagnostics: found, channels: [], messages: [], version: null };
if (document) {
  summary.version = document.info().version();
  summary.channels = document.channels().all().map((c) => c.address());
  summary.messages = document.components().messages().all().map((m) => m.name());
}
console.log(JSON.stringify(summary));
process.exit(document && !found.some((d) => d.severity === "error") ? 0 : 1);
