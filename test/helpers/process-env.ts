/**
 * Set variables the SDKs read from `process.env` themselves
 * (`AWS_EC2_METADATA_SERVICE_ENDPOINT`, `AWS_ENDPOINT_URL_AUTO_SCALING`,
 * `GCE_METADATA_HOST`) for an in-process test; returns what puts the old
 * values back. Vitest runs each test file in its own process, so this never
 * leaks into another file.
 */
export function setProcessEnv(vars: Record<string, string>): () => void {
  const previous = Object.fromEntries(Object.keys(vars).map((name) => [name, process.env[name]]));
  Object.assign(process.env, vars);
  return () => {
    for (const [name, value] of Object.entries(previous)) {
      if (value === undefined) delete process.env[name];
      else process.env[name] = value;
    }
  };
}
