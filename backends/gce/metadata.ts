/**
 * The GCE metadata server: when the worker itself runs on GCE (a managed
 * instance group), its project, zone and network are the defaults for the
 * job VMs, so such a worker needs almost no settings.
 */
import { ConfigError, type Logger } from '../../src/backend/kit.js';
import { DEFAULT_NETWORK, DEFAULT_ZONE, type GceSettings } from './settings.js';

/** The standard name; Google's libraries (gcp-metadata) honour `GCE_METADATA_HOST` too. */
export const DEFAULT_METADATA_HOST = 'metadata.google.internal';
/** On GCE the server answers within milliseconds; elsewhere don't hold startup up. */
const METADATA_TIMEOUT_MS = 2_000;

/** Where the backend's VMs go, settled once at startup. */
export interface GcePlacement {
  projectId: string;
  zones: string[];
  /** Network name or URL. */
  network: string;
}

/** `host[:port]` of the metadata server: the setting, else the standard environment variable, else the real one. */
export function metadataHostOf(setting: string, env: NodeJS.ProcessEnv = process.env): string {
  return setting.trim() || env['GCE_METADATA_HOST']?.trim() || DEFAULT_METADATA_HOST;
}

/** One metadata value, or undefined when the server is not there or does not know it. */
async function metadataValue(host: string, path: string, signal: AbortSignal): Promise<string | undefined> {
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
 * only for those not set. Throws `ConfigError` naming
 * `TRAVIS_WORKER_GCE_PROJECT_ID` when no project can be found.
 */
export async function resolvePlacement(settings: GceSettings, logger: Logger, signal: AbortSignal): Promise<GcePlacement> {
  const zones = settings.zones.length > 0 ? settings.zones : settings.zone.trim() === '' ? [] : settings.zone.split(',').map((z) => z.trim());
  const known = { projectId: settings.projectId.trim(), network: settings.network.trim() };
  if (known.projectId !== '' && zones.length > 0 && known.network !== '') {
    return { projectId: known.projectId, zones, network: known.network };
  }
  const host = metadataHostOf(settings.metadataHost);
  const [projectId, zone, network] = await Promise.all([
    known.projectId === '' ? metadataValue(host, 'project/project-id', signal) : Promise.resolve(known.projectId),
    zones.length === 0 ? metadataValue(host, 'instance/zone', signal) : Promise.resolve(undefined),
    known.network === '' ? metadataValue(host, 'instance/network-interfaces/0/network', signal) : Promise.resolve(known.network),
  ]);
  if (projectId === undefined) {
    throw new ConfigError(
      `TRAVIS_WORKER_GCE_PROJECT_ID is not set and the metadata server (${host}) did not answer: set TRAVIS_WORKER_GCE_PROJECT_ID`,
    );
  }
  const placement = {
    projectId,
    zones: zones.length > 0 ? zones : [zone === undefined ? DEFAULT_ZONE : lastSegment(zone)],
    network: known.network !== '' ? known.network : network === undefined ? DEFAULT_NETWORK : lastSegment(network),
  };
  logger.info({ project: placement.projectId, zones: placement.zones, network: placement.network }, 'gce placement resolved');
  return placement;
}
