// Builds the lab page into dist/: app.js (our sources + d3 modules, one IIFE), app.css,
// index.html and THIRD_PARTY_LICENSES.txt. dist/ is committed so `pip install` needs no npm.
//   npm ci && npm run build     rebuild after editing src/ or updating dependencies
//   npm run check               fail if dist/ is not what the sources build to
import { build } from "esbuild";
import { readFileSync, writeFileSync, mkdirSync, existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const dist = join(here, "dist");
const check = process.argv.includes("--check");

const common = { bundle: true, minify: true, write: false, logLevel: "warning", legalComments: "none" };
const js = await build({
  ...common,
  entryPoints: [join(here, "src/main.js")],
  format: "iife",
  target: "es2020",
  metafile: true,
});
const css = await build({ ...common, entryPoints: [join(here, "src/style.css")] });

// The licence of every npm package that ended up in the bundle.
const packages = new Set();
for (const input of Object.keys(js.metafile.inputs)) {
  const m = input.match(/node_modules\/((?:@[^/]+\/)?[^/]+)\//);
  if (m) packages.add(m[1]);
}
let licenses = "Third-party code bundled into app.js (from npm):\n";
for (const name of [...packages].sort()) {
  const dir = join(here, "node_modules", name);
  const pkg = JSON.parse(readFileSync(join(dir, "package.json"), "utf8"));
  const file = ["LICENSE", "LICENSE.md", "LICENSE.txt"].map((f) => join(dir, f)).find(existsSync);
  licenses += `\n==== ${name}@${pkg.version} (${pkg.license}) ====\n`;
  licenses += file ? readFileSync(file, "utf8") : "(no licence file shipped)\n";
}

const outputs = {
  "app.js": js.outputFiles[0].text,
  "app.css": css.outputFiles[0].text,
  "index.html": readFileSync(join(here, "src/index.html"), "utf8"),
  "THIRD_PARTY_LICENSES.txt": licenses,
};
if (check) {
  const stale = Object.keys(outputs).filter(
    (f) => !existsSync(join(dist, f)) || readFileSync(join(dist, f), "utf8") !== outputs[f],
  );
  if (stale.length) {
    console.error(`dist/ is stale: ${stale.join(", ")} (run npm run build)`);
    process.exit(1);
  }
  console.log("dist/ is up to date");
} else {
  mkdirSync(dist, { recursive: true });
  for (const [f, text] of Object.entries(outputs)) writeFileSync(join(dist, f), text);
  const kb = (s) => (Buffer.byteLength(s) / 1024).toFixed(1);
  console.log(`dist/app.js ${kb(outputs["app.js"])} KiB, app.css ${kb(outputs["app.css"])} KiB`);
}
