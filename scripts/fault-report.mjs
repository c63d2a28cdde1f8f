// Prints the fault-injection suite's results as a markdown table (see
// docs/failure-modes.md). FILE holds one JSON line per scenario, appended by the job
// ledger (test/helpers/job-ledger.ts) when the suite runs with
// MAYFLY_FAULT_REPORT=FILE:
//
//   MAYFLY_FAULT_REPORT=/tmp/faults.jsonl npx vitest run test/fault
//   node scripts/fault-report.mjs /tmp/faults.jsonl
import { readFileSync } from 'node:fs';

const file = process.argv[2];
if (!file) {
  console.error('usage: node scripts/fault-report.mjs FILE');
  process.exit(2);
}
const reports = readFileSync(file, 'utf8')
  .split('\n')
  .filter((line) => line.trim() !== '')
  .map((line) => JSON.parse(line));

// VMs leaked is measured by the scenarios that run a reaper pass, requeued before the
// deadline by those with a notice from the cloud (spot, preemption); the others show a dash.
const measured = (report, key) => (typeof report[key] === 'number' ? String(report[key]) : '-');
const cell = (text) => String(text).replaceAll('|', '\\|');
const sum = (key) => reports.reduce((total, report) => total + (typeof report[key] === 'number' ? report[key] : 0), 0);
const rows = [
  '| scenario | jobs run | jobs lost | log parts lost | VMs leaked | requeued before the deadline |',
  '|---|---:|---:|---:|---:|---:|',
  ...reports.map((r) => `| ${cell(r.scenario)} | ${r.jobsRun} | ${r.jobsLost} | ${r.partsLost} | ${measured(r, 'vmsLeaked')} | ${measured(r, 'requeuedBeforeDeadline')} |`),
  `| **${reports.length} scenarios** | ${sum('jobsRun')} | ${sum('jobsLost')} | ${sum('partsLost')} | ${sum('vmsLeaked')} | ${sum('requeuedBeforeDeadline')} |`,
];
console.log(rows.join('\n'));
