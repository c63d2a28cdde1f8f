/**
 * The one step between convict's value and the config: unset settings
 * leave the config. convict keeps every declared key, an unset optional
 * setting as `null`; the config has no such key instead
 * (`exactOptionalPropertyTypes`), and an optional group (the debug port,
 * the heartbeat) is left out whole while the setting that turns it on is
 * unset.
 */

/** Marks a group of the schema as optional; a symbol, so convict and `schemaLeaves` never see it. */
const SWITCHED_BY = Symbol('switchedBy');

/** A group that is in the config only while its `switch` setting is set. */
export function optionalGroup<G extends object>(switchKey: keyof G & string, group: G): G {
  return Object.assign(group, { [SWITCHED_BY]: switchKey });
}

function isGroupValue(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/**
 * `value` (convict's, shaped by `schema`) without its unset settings and
 * without the optional groups whose switch is unset.
 */
export function withoutUnset(schema: object, value: Record<string, unknown>): Record<string, unknown> {
  const result: Record<string, unknown> = {};
  for (const [key, child] of Object.entries(value)) {
    if (child === null || child === undefined) continue;
    const node = (schema as Record<string, unknown>)[key];
    if (isGroupValue(child) && isGroupValue(node) && !('default' in node)) {
      const switchKey = (node as { [SWITCHED_BY]?: string })[SWITCHED_BY];
      if (switchKey !== undefined && (child[switchKey] === null || child[switchKey] === undefined)) continue;
      result[key] = withoutUnset(node, child);
    } else {
      result[key] = child;
    }
  }
  return result;
}
