// Validate AsyncAPI documents with the AsyncAPI project's own parser (@asyncapi/parser).
// Usage: node validate_asyncapi.mjs FILE... Prints one JSON line per file: the diagnostics and
// what the parsed document lists (channel addresses, message names, version); exits 1 when any
// file has an error diagnostic.
import { readFileSync } from "node:fs";
import { Parser } from "@asyncapi/parser";

const SEVERITY = ["error", "warning", "info", "hint"];
const parser = new Parser();
let failed = false;
for (const file of process.argv.slice(2)) {
  const { document, diagnostics } = await parser.parse(readFileSync(file, "utf8"));
  const found = diagnostics.map((d) => ({
    severity: SEVERITY[d.severity], code: d.code, message: d.message, path: d.path.join("."),
  }));
  const summary = { file, diagnostics: found, channels: [], messages: [], version: null };
  if (document) {
    summary.version = document.info().version();
    summary.channels = document.channels().all().map((c) => c.address());
    summary.messages = document.components().messages().all().map((m) => m.name());
  }
  failed ||= !document || found.some((d) => d.severity === "error");
  console.log(JSON.stringify(summary));
}
process.exit(failed ? 1 : 0);
