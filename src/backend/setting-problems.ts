/**
 * Turning a backend's parsers into validation: each parser that can refuse
 * the text of a setting throws an `Error` saying what is wrong, and
 * `settingProblems` runs them all, so every bad setting is reported at once
 * instead of the first one only.
 */
import type { SettingProblem } from './contract.js';
import { errorMessage } from '../errors.js';

/** A setting's key and a check of it that throws an `Error` whose message is the problem. */
export type SettingCheck = readonly [setting: string, check: () => unknown];

/** The problems of the checks that threw, in order. */
export function settingProblems(checks: readonly SettingCheck[]): SettingProblem[] {
  const problems: SettingProblem[] = [];
  for (const [setting, check] of checks) {
    try {
      check();
    } catch (err) {
      problems.push({ setting, problem: errorMessage(err) });
    }
  }
  return problems;
}
