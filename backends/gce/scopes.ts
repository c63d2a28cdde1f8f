/**
 * A worker on its VM's own credentials gets tokens with the VM's access
 * scopes, whatever scopes it asks for: on a VM made with GCE's default
 * access, Compute is not among them and every call is refused. The metadata
 * server lists the scopes, so the worker checks them at startup and says
 * what to change, instead of failing every job.
 */
import { existsSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { ConfigError } from '../../src/backend/kit.js';
import { COMPUTE_SCOPE } from './auth.js';
import { metadataValue } from './metadata.js';

/** Compute's scope is enough; so is cloud-platform, which includes it. */
export const CLOUD_PLATFORM_SCOPE = 'https://www.googleapis.com/auth/cloud-platform';

/**
 * Whether the Compute calls go out on the VM's own service account: no
 * ACCOUNT_JSON, and none of the application default credentials Google's
 * libraries take before the metadata server's (GOOGLE_APPLICATION_CREDENTIALS,
 * then gcloud's application_default_credentials.json).
 */
export function usesVmCredentials(accountJson: string, env: NodeJS.ProcessEnv = process.env): boolean {
  if (accountJson.trim() !== '') return false;
  if ((env['GOOGLE_APPLICATION_CREDENTIALS'] ?? '').trim() !== '') return false;
  const gcloudConfig = env['CLOUDSDK_CONFIG']?.trim() || join(homedir(), '.config', 'gcloud');
  return !existsSync(join(gcloudConfig, 'application_default_credentials.json'));
}

/**
 * Throws `ConfigError` naming the missing scope when the metadata server at
 * `host` lists the VM's scopes and neither Compute nor cloud-platform is
 * among them. A server that does not answer means the worker is not on GCE:
 * its credentials come from elsewhere, and there is nothing to check.
 */
export async function checkVmScopes(host: string, signal: AbortSignal): Promise<void> {
  const listed = await metadataValue(host, 'instance/service-accounts/default/scopes', signal);
  if (listed === undefined) return;
  const scopes = listed.split(/\s+/).filter((scope) => scope !== '');
  if (scopes.includes(COMPUTE_SCOPE) || scopes.includes(CLOUD_PLATFORM_SCOPE)) return;
  throw new ConfigError(
    `the gce backend runs on this VM's own service account, whose access scopes (${scopes.join(', ') || 'none'}) lack ${COMPUTE_SCOPE}: GCE would refuse every call. ` +
      `Give the VM the scope ${COMPUTE_SCOPE} or ${CLOUD_PLATFORM_SCOPE} (gcloud compute instances set-service-account VM --scopes=compute-rw, on the stopped VM, or in the instance template), or set TRAVIS_WORKER_GCE_ACCOUNT_JSON`,
  );
}
