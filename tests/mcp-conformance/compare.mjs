// Compares two runs of the MCP conformance suite's server scenarios (the
// backend directly, and through the gateway) check by check.
//
//   node compare.mjs <plan.json> <direct-dir> <gateway-dir> <out-dir>
//
// plan.json: [{"version": "2025-11-25", "scenario": "ping"}, ...], every
// (revision, scenario) pair that was run. Each results dir holds
// <version>/server-<scenario>-<timestamp>/checks.json as the suite writes it.
//
// Only statuses are compared (SUCCESS, FAILURE, WARNING, INFO, SKIPPED);
// timestamps, details and messages are not, since they carry ports, session
// ids and timings. Messages are shown, normalised, for the checks that differ.
// Writes direct.json and gateway.json (normalised) to <out-dir>; prints the
// table; exits 1 on any difference or missing result, else 0.
import { readFileSync, readdirSync, writeFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';

const [planFile, directDir, gatewayDir, outDir] = process.argv.slice(2);
const plan = JSON.parse(readFileSync(planFile, 'utf8'));

// "server-<scenario>-2026-12-07T06-52-24-779Z" -> "<scenario>"
const scenarioOf = (dir) => dir.replace(/^server-/, '').replace(/-\d{4}-\d{2}-\d{2}T[\d-]+Z$/, '');

// Ports, URLs, uuids and times vary between runs and between the two targets.
const normalise = (text) =>
  String(text ?? '')
    .replace(/https?:\/\/[^\s"',)]+/g, '<url>')
    .replace(/\b127\.0\.0\.1:\d+|localhost:\d+/g, '<host>')
    .replace(/\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b/gi, '<uuid>')
    .replace(/\btg1\.[A-Za-z0-9_-]+/g, '<sealed-session>')
    .replace(/\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z/g, '<time>')
    .replace(/\b\d+(\.\d+)? ?ms\b/g, '<n>ms')
    .replace(/\s+/g, ' ')
    .trim();

// version -> scenario -> [{key, status, message}]; a scenario run twice at
// one version (it should not be) keeps its last result.
function load(root) {
  const out = {};
  for (const version of existsSync(root) ? readdirSync(root) : []) {
    for (const dir of readdirSync(join(root, version)).sort()) {
      const file = join(root, version, dir, 'checks.json');
      if (!existsSync(file)) continue;
      const seen = new Map();
      const checks = JSON.parse(readFileSync(file, 'utf8')).map((c) => {
        // Ids repeat within a scenario (one per SSE event, say): number them.
        const base = `${c.id} (${c.name})`;
        const n = (seen.get(base) ?? 0) + 1;
        seen.set(base, n);
        return { key: n > 1 ? `${base} #${n}` : base, status: c.status, message: normalise(c.errorMessage) };
      });
      (out[version] ??= {})[scenarioOf(dir)] = checks;
    }
  }
  return out;
}

// Checks where the gateway is known to do better than the backend, each
// with why. Only FAILURE (direct) -> SUCCESS (gateway) is excused, and only
// for these: anything else that differs fails the run.
const EXPECTED = [
  {
    version: '2026-07-28',
    scenario: 'server-stateless',
    check: /^sep-2575-http-server-header-mismatch-400\b/,
    why: 'the gateway checks 2026-07-28 mirrored headers against the body itself (400, -32020); server-everything answers every sessionless request "Server not initialized"',
  },
  {
    version: '2025-11-25',
    scenario: 'dns-rebinding-protection',
    check: /^localhost-host-rebinding-rejected\b/,
    why: 'the gateway refuses browser origins that are neither local nor allowed (spec.mcp.allowedOrigins); server-everything checks none',
  },
  {
    version: 'extension',
    scenario: 'tasks-request-headers',
    check: /^tasks-headers-reject-mismatched-method\b/,
    why: 'the same header check: Mcp-Method differs from the body method',
  },
];
const excused = (version, scenario, d) =>
  d.ca?.status === 'FAILURE' &&
  d.cb?.status === 'SUCCESS' &&
  EXPECTED.find((e) => e.version === version && e.scenario === scenario && e.check.test(d.key));

const direct = load(directDir);
const gateway = load(gatewayDir);
const results = { direct: {}, gateway: {} };

const count = (checks) => {
  if (!checks) return 'NO RESULT';
  const n = (s) => checks.filter((c) => c.status === s).length;
  const parts = [`${n('SUCCESS')} ok`, `${n('FAILURE')} fail`];
  if (n('WARNING')) parts.push(`${n('WARNING')} warn`);
  if (n('SKIPPED')) parts.push(`${n('SKIPPED')} skipped`);
  return parts.join(' ');
};

const rows = [];
const diffs = [];
let missing = 0;
for (const { version, scenario } of plan) {
  const a = direct[version]?.[scenario];
  const b = gateway[version]?.[scenario];
  for (const [side, checks] of [['direct', a], ['gateway', b]]) {
    (results[side][version] ??= {})[scenario] = checks
      ? Object.fromEntries(checks.map((c) => [c.key, c.status]))
      : 'NO RESULT';
  }
  if (!a || !b) missing++;
  const keys = [...new Set([...(a ?? []), ...(b ?? [])].map((c) => c.key))];
  const differing = [];
  for (const key of keys) {
    const ca = a?.find((c) => c.key === key);
    const cb = b?.find((c) => c.key === key);
    if (ca?.status !== cb?.status) differing.push({ key, ca, cb });
  }
  const unexcused = differing.filter((d) => !excused(version, scenario, d));
  const same = a && b && unexcused.length === 0;
  const verdict = !same ? 'DIFFERENT' : differing.length ? 'gateway better (expected)' : 'same';
  rows.push([version, scenario, count(a), count(b), verdict]);
  for (const d of differing) diffs.push({ version, scenario, ...d, expected: excused(version, scenario, d) });
}

writeFileSync(join(outDir, 'direct.json'), JSON.stringify(results.direct, null, 2));
writeFileSync(join(outDir, 'gateway.json'), JSON.stringify(results.gateway, null, 2));

const header = ['revision', 'scenario', 'direct', 'gateway', ''];
const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
const line = (r) => r.map((c, i) => c.padEnd(widths[i])).join('  ').trimEnd();
console.log(line(header));
console.log(line(widths.map((w) => '-'.repeat(w))));
for (const r of rows) console.log(line(r));

if (diffs.length) {
  console.log(`\nChecks whose status differs (direct -> gateway):`);
  for (const { version, scenario, key, ca, cb, expected } of diffs) {
    console.log(`  [${version}] ${scenario} :: ${key}: ${ca?.status ?? 'absent'} -> ${cb?.status ?? 'absent'}` +
      (expected ? ` (expected: ${expected.why})` : ''));
    if (ca?.message) console.log(`      direct:  ${ca.message.slice(0, 400)}`);
    if (cb?.message) console.log(`      gateway: ${cb.message.slice(0, 400)}`);
  }
}
const differentRows = rows.filter((r) => r[4] === 'DIFFERENT').length;
console.log(
  `\n${rows.length} (revision, scenario) runs compared: ${rows.length - differentRows} the same, ` +
    `${differentRows} different (${diffs.filter((d) => !d.expected).length} checks; ${diffs.filter((d) => d.expected).length} expected improvements)` +
    (missing ? `, ${missing} without a result on one side or both` : ''),
);
if (process.env.MCP_TRANSLATE) {
  // Translating on purpose: report the direction of each change.
  const rank = { SUCCESS: 3, INFO: 3, WARNING: 2, FAILURE: 1, SKIPPED: 0 };
  // Checks reported on both sides compare by rank; a check only one side
  // reports (the scenario got further, or stopped earlier) is counted apart.
  const both = diffs.filter((d) => d.ca && d.cb);
  const better = both.filter((d) => rank[d.cb.status] > rank[d.ca.status]).length;
  const worse = both.filter((d) => rank[d.cb.status] < rank[d.ca.status]).length;
  const reached = diffs.filter((d) => !d.ca && d.cb).length;
  const gone = diffs.filter((d) => d.ca && !d.cb).length;
  console.log(
    `mcp-conformance (translating): ${better} checks better through the gateway, ${worse} worse; ` +
      `${reached} reported only through the gateway, ${gone} only directly`,
  );
  process.exit(missing ? 1 : 0);
}
// The closing line CI reads: a (revision, scenario) run passes when the
// gateway gave exactly the backend's results.
console.log(`mcp-conformance: ${rows.length - differentRows} passed, ${differentRows} failed`);
process.exit(differentRows || missing ? 1 : 0);
