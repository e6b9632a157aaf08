#!/usr/bin/env node
// Open a viewer bundle the way Pennsieve's viewer does and print what the reference reader
// (@pennsieve/timeseries-zarr-reader) returns, as JSON on stdout.
//
// The bundle folder is served over HTTP on 127.0.0.1 (an ephemeral port, this process only)
// with Range support (offset ranges and suffix ranges), and opened with the reader's
// openBundle("http://127.0.0.1:PORT/"), i.e. zarrita's FetchStore with suffix requests.
//
// Usage:
//   node read_bundle.mjs BUNDLE_DIR [--reader DIR] [--channels id,id] [--levels]
//                        [--max-values N] [--no-bodies] [--start-us T --end-us T]
//
//   --reader DIR     the reader's folder with a built dist/ (make test builds build/tszarr-reader)
//   --channels       only these channel ids (default: every channel of every kind)
//   --levels         also read every level group's env through the reader (one query per level,
//                    pixelWidthUs = the level's period_us, so no resampling happens)
//   --max-values N   cut every printed value array to its first N values (default: all);
//                    the lengths are always printed in full
//   --no-bodies      do not read annotation bodies
//   --start-us/--end-us  the window (onset-relative µs); default: each channel's whole extent
//
// Output: {"requests": {...}, "channels": [...], "events": [...], "units": [...]}
//   channels: channelInfo() of each continuous channel, "raw" (query raw: true over the window:
//             startUs, samplePeriodUs, n, values with NaN as null) and with --levels "levels".
//   events:   eventChannels() info + queryEvents over [0, 2^53) (or the window): each event's
//             index, timeUs, durationUs, label, body, channels.
//   units:    older-layout unit channels (kind "unit"): queryUnits over the window.
// Exit status 1 (and {"error": ...}) when the reader throws.

import { createServer } from "node:http";
import { createReadStream, promises as fs } from "node:fs";
import path from "node:path";
import { pathToFileURL } from "node:url";

function parseArgs(argv) {
  const out = { reader: "build/tszarr-reader", levels: false, bodies: true };
  const rest = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === "--reader") out.reader = argv[++i];
    else if (a === "--channels") out.channels = argv[++i].split(",");
    else if (a === "--levels") out.levels = true;
    else if (a === "--no-bodies") out.bodies = false;
    else if (a === "--max-values") out.maxValues = Number(argv[++i]);
    else if (a === "--start-us") out.startUs = Number(argv[++i]);
    else if (a === "--end-us") out.endUs = Number(argv[++i]);
    else rest.push(a);
  }
  if (rest.length !== 1) {
    console.error("usage: node read_bundle.mjs BUNDLE_DIR [--reader DIR] [--channels a,b] [--levels] [--max-values N]");
    process.exit(2);
  }
  out.bundle = path.resolve(rest[0]);
  return out;
}

// A static file server with HTTP Range (RFC 9110: bytes=a-b, bytes=a-, bytes=-n), loopback only.
function serve(root, stats) {
  const server = createServer(async (req, res) => {
    stats.requests++;
    try {
      const url = new URL(req.url, "http://127.0.0.1");
      const rel = decodeURIComponent(url.pathname).replace(/^\/+/, "");
      const file = path.resolve(root, rel);
      if (file !== root && !file.startsWith(root + path.sep)) {
        res.writeHead(403).end();
        return;
      }
      let st;
      try {
        st = await fs.stat(file);
      } catch {
        stats.notFound++;
        res.writeHead(404).end();
        return;
      }
      if (!st.isFile()) {
        stats.notFound++;
        res.writeHead(404).end();
        return;
      }
      const size = st.size;
      const range = req.headers.range;
      const head = req.method === "HEAD";
      if (!range) {
        stats.full++;
        res.writeHead(200, { "Content-Length": size, "Accept-Ranges": "bytes" });
        if (head) return res.end();
        createReadStream(file).pipe(res);
        return;
      }
      const m = /^bytes=(\d*)-(\d*)$/.exec(range.trim());
      if (!m || (m[1] === "" && m[2] === "")) {
        res.writeHead(416, { "Content-Range": `bytes */${size}` }).end();
        return;
      }
      let start;
      let end;
      if (m[1] === "") {
        stats.suffix++;
        const n = Number(m[2]);
        start = Math.max(0, size - n);
        end = size - 1;
      } else {
        stats.ranged++;
        start = Number(m[1]);
        end = m[2] === "" ? size - 1 : Math.min(Number(m[2]), size - 1);
      }
      if (start > end || start >= size) {
        res.writeHead(416, { "Content-Range": `bytes */${size}` }).end();
        return;
      }
      stats.bytes += end - start + 1;
      res.writeHead(206, {
        "Content-Length": end - start + 1,
        "Content-Range": `bytes ${start}-${end}/${size}`,
        "Accept-Ranges": "bytes",
      });
      if (head) return res.end();
      createReadStream(file, { start, end }).pipe(res);
    } catch (err) {
      res.writeHead(500).end(String(err));
    }
  });
  return new Promise((resolve) => {
    server.listen(0, "127.0.0.1", () => resolve(server));
  });
}

function values(data, max) {
  const arr = Array.from(data, (v) => (Number.isFinite(v) ? v : null));
  return max === undefined ? arr : arr.slice(0, max);
}

// Level periods straight from the consolidated root (the reader's catalog does not expose them).
async function levelPeriods(bundle) {
  const root = JSON.parse(await fs.readFile(path.join(bundle, "zarr.json"), "utf8"));
  const nodes = root?.consolidated_metadata?.metadata ?? {};
  const byChannelPath = new Map();
  for (const [p, node] of Object.entries(nodes)) {
    const parts = p.split("/");
    // current layout: a level group "<ch>/<k>" (k >= 1); older layout: a level array "<ch>/<k>" (k >= 1)
    if (parts.length === 2 && /^\d+$/.test(parts[1]) && Number(parts[1]) >= 1) {
      const period = node.attributes?.period_us;
      if (typeof period === "number") {
        const list = byChannelPath.get(parts[0]) ?? [];
        list.push({ level: Number(parts[1]), periodUs: period });
        byChannelPath.set(parts[0], list);
      }
    }
  }
  const idByPath = new Map();
  for (const [p, node] of Object.entries(nodes)) {
    if (!p.includes("/") && node.node_type === "group" && typeof node.attributes?.id === "string") {
      idByPath.set(p, node.attributes.id);
    }
  }
  const out = new Map();
  for (const [p, list] of byChannelPath) {
    out.set(idByPath.get(p), list.sort((a, b) => a.level - b.level));
  }
  return out;
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const stats = { requests: 0, full: 0, ranged: 0, suffix: 0, notFound: 0, bytes: 0 };
  const server = await serve(args.bundle, stats);
  const { port } = server.address();
  const reader = await import(pathToFileURL(path.join(args.reader, "dist", "index.js")).href);
  const out = { url: `http://127.0.0.1:${port}/`, channels: [], events: [], units: [] };
  try {
    const store = await reader.openBundle(out.url);
    const client = new reader.StreamingClient({ store, maxRawBytes: 2 ** 40 });
    const wanted = (id) => !args.channels || args.channels.includes(id);
    const infos = (await client.channelInfo()).filter((c) => wanted(c.id));
    const periods = args.levels ? await levelPeriods(args.bundle) : new Map();
    for (const info of infos) {
      if (info.kind === "unit") {
        const startUs = args.startUs ?? info.startUs;
        const endUs = args.endUs ?? Number.MAX_SAFE_INTEGER;
        for await (const batch of client.queryUnits({
          channels: [info.id],
          startUs,
          endUs,
          pixelWidthUs: 1,
        })) {
          out.units.push({
            info,
            n: batch.times.length,
            times: values(batch.times, args.maxValues),
            pointsPerEvent: batch.pointsPerEvent,
            samplePeriodUs: batch.samplePeriodUs,
          });
        }
        continue;
      }
      const startUs = args.startUs ?? info.startUs;
      const endUs = args.endUs ?? info.endUs;
      const entry = { info };
      for await (const seg of client.query({
        channels: [info.id],
        startUs,
        endUs,
        pixelWidthUs: 1e6 / info.rateHz,
        raw: true,
      })) {
        entry.raw = {
          startUs: seg.startUs,
          samplePeriodUs: seg.samplePeriodUs,
          isMinMax: seg.isMinMax,
          n: seg.data.length,
          values: values(seg.data, args.maxValues),
        };
      }
      if (args.levels) {
        entry.levels = [];
        for (const { level, periodUs } of periods.get(info.id) ?? []) {
          for await (const seg of client.query({
            channels: [info.id],
            startUs,
            endUs,
            pixelWidthUs: periodUs,
          })) {
            entry.levels.push({
              level,
              periodUs,
              startUs: seg.startUs,
              samplePeriodUs: seg.samplePeriodUs,
              isMinMax: seg.isMinMax,
              n: seg.data.length,
              values: values(seg.data, args.maxValues),
            });
          }
        }
      }
      out.channels.push(entry);
    }
    const eventInfos = (await client.eventChannels()).filter((c) => wanted(c.id));
    for (const info of eventInfos) {
      const win = await client.queryEvents({
        channel: info.id,
        startUs: args.startUs ?? 0,
        endUs: args.endUs ?? Number.MAX_SAFE_INTEGER,
        bodies: args.bodies,
      });
      const events = args.maxValues === undefined ? win.events : win.events.slice(0, args.maxValues);
      out.events.push({ info, n: win.events.length, events });
    }
    out.requests = stats;
    process.stdout.write(JSON.stringify(out) + "\n");
  } catch (err) {
    out.requests = stats;
    out.error = String(err?.stack ?? err);
    process.stdout.write(JSON.stringify(out) + "\n");
    process.exitCode = 1;
  } finally {
    server.close();
  }
}

main();
