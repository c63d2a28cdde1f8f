/**
 * The GCE metadata server: when the worker itself runs on GCE (a managed
 * instance group), its project, zone and network are the defaults for the
 * job VMs, so such a worker needs almost no settings.
 */
import { ConfigError, type Logger } from '../../src/backend/kit.js';
import type { GceInstanceResource } from './api.js';
import { resolveJobNetwork, type JobNetwork } from './network.js';
import { DEFAULT_ZONE, type GceSettings } from './settings.js';

/** The standard name; Google's libraries (gcp-metadata) honour `GCE_METADATA_HOST` too. */
export const DEFAULT_METADATA_HOST = 'metadata.google.internal';
/** On GCE the server answers within milliseconds; elsewhere don't hold startup up. */
const METADATA_TIMEOUT_MS = 2_000;

/** Where the backend's VMs go, settled once at startup. */
export interface GcePlacement {
  projectId: string;
  zones: string[];
  network: JobNetwork;
}

/** `host[:port]` of the metadata server: the setting, else the standard environment variable, else the real one. */
export function metadataHostOf(setting: string, env: NodeJS.ProcessEnv = process.env): string {
  return setting.trim() || env['GCE_METADATA_HOST']?.trim() || DEFAULT_METADATA_HOST;
}

/** One metadata value, or undefined when the server is not there or does not know it. */
export async function metadataValue(host: string, path: string, signal: AbortSignal): Promise<string | undefined> {
  const base = /^https?:\/\//.test(host) ? host : `http://${host}`;
  try {
    const response = await fetch(`${base}/computeMetadata/v1/${path}`, {
      headers: { 'Metadata-Flavor': 'Google' },
      signal: AbortSignal.any([signal, AbortSignal.timeout(METADATA_TIMEOUT_MS)]),
    });
    const text = await response.text();
    // Anything else answering on that name (a captive proxy) is not the metadata server.
    if (!response.ok || response.headers.get('metadata-flavor') !== 'Google') return undefined;
    return text.trim() || undefined;
  } catch {
    if (signal.aborted) throw signal.reason;
    return undefined;
  }
}

/** The last path segment of `projects/123/zones/us-central1-b`. */
const lastSegment = (text: string): string => text.split('/').filter(Boolean).pop() ?? text;

/**
 * Project, zones and network from the settings, asking the metadata server
 * only for those not set (and, without SUBNETWORK, for the worker's own VM,
 * whose network the job VMs may share). Throws
 * `ConfigError` naming `TRAVIS_WORKER_GCE_PROJECT_ID` when no project can be
 * found, and as `resolveJobNetwork` does.
 */
export async function resolvePlacement(
  settings: GceSettings,
  logger: Logger,
  signal: AbortSignal,
  getInstance: (project: string, zone: string, name: string) => Promise<GceInstanceResource>,
): Promise<GcePlacement> {
  const configuredZones = settings.zones.length > 0 ? settings.zones : settings.zone.trim() === '' ? [] : settings.zone.split(',').map((z) => z.trim());
  const configuredProject = settings.projectId.trim();
  const configuredNetwork = settings.network.trim();
  // Without SUBNETWORK, job VMs may share the worker VM's own interface (network.ts): find that VM.
  const mayShare = settings.subnetwork.trim() === '';
  const host = metadataHostOf(settings.metadataHost);
  const ask = (path: string, needed: boolean): Promise<string | undefined> => (needed ? metadataValue(host, path, signal) : Promise.resolve(undefined));
  const [vmProject, vmZone, vmName, vmNetwork] = await Promise.all([
    ask('project/project-id', configuredProject === '' || mayShare),
    ask('instance/zone', configuredZones.length === 0 || mayShare),
    ask('instance/name', mayShare),
    ask('instance/network-interfaces/0/network', mayShare && configuredNetwork !== ''),
  ]);
  const projectId = configuredProject || vmProject;
  if (projectId === undefined) {
    throw new ConfigError(
      `TRAVIS_WORKER_GCE_PROJECT_ID is not set and the metadata server (${host}) did not answer: set TRAVIS_WORKER_GCE_PROJECT_ID`,
    );
  }
  const zones = configuredZones.length > 0 ? configuredZones : [vmZone === undefined ? DEFAULT_ZONE : lastSegment(vmZone)];
  const workerVm =
    vmProject !== undefined && vmZone !== undefined && vmName !== undefined
      ? { projectId: vmProject, zone: lastSegment(vmZone), name: vmName, ...(vmNetwork === undefined ? {} : { networkName: lastSegment(vmNetwork) }) }
      : undefined;
  const network = await resolveJobNetwork({ settings, projectId, zones, workerVm, getInstance });
  logger.info({ project: projectId, zones, network: network.describe }, 'gce placement resolved');
  return { projectId, zones, network };
}
