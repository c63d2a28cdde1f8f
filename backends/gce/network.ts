/**
 * The network and subnetwork a job VM's interface is put on, settled once
 * at startup. A custom-mode VPC requires a subnetwork of the VM's region,
 * and on a Shared VPC both belong to the host project, not to the project
 * the VMs run in: a URL is therefore never rebuilt under a guessed project.
 * Either SUBNETWORK says where (a URL as given, or a name in the job
 * project's region), or a worker that runs on GCE, with NETWORK empty or
 * naming its own network, puts job VMs where it is itself (its own
 * interface, read with instances.get), or the network alone is named, which
 * only an auto-mode or legacy network takes.
 */
import { ConfigError, errorMessage } from '../../src/backend/kit.js';
import type { GceInstanceResource } from './api.js';
import { regionOf } from './instance-spec.js';
import { DEFAULT_NETWORK, type GceSettings } from './settings.js';

/** Where job VMs are attached. */
export interface JobNetwork {
  /** The interface's `network`; undefined: GCE takes the subnetwork's (which may be in a Shared VPC host project). */
  network: string | undefined;
  /** The interface's `subnetwork` for a VM in `region`; undefined: none named (the network picks its own). */
  subnetworkFor(region: string): string | undefined;
  /** For the startup log line. */
  describe: string;
}

/** The VM the worker runs on, as the metadata server names it. */
export interface WorkerVm {
  projectId: string;
  zone: string;
  name: string;
  /** The name of its network (the metadata server gives no project), when asked for. */
  networkName?: string;
}

export interface NetworkInput {
  settings: Pick<GceSettings, 'network' | 'subnetwork' | 'region'>;
  /** The project the job VMs run in. */
  projectId: string;
  /** The zones the job VMs run in. */
  zones: readonly string[];
  /** Undefined: the worker does not run on GCE (the metadata server did not answer). */
  workerVm: WorkerVm | undefined;
  /** instances.get. */
  getInstance(project: string, zone: string, name: string): Promise<GceInstanceResource>;
}

/** A setting that holds a URL (full or project-relative) rather than a bare name. */
const isUrl = (value: string): boolean => value.includes('/');
/** The project a resource URL names (`.../projects/P/...`). */
const projectIn = (url: string): string | undefined => /(?:^|\/)projects\/([^/]+)\//.exec(url)?.[1];

const NETWORK_URL = /(?:^|\/)projects\/[^/]+\/global\/networks\/([^/]+)$/;
const SUBNETWORK_URL = /(?:^|\/)projects\/[^/]+\/regions\/([^/]+)\/subnetworks\/([^/]+)$/;

export async function resolveJobNetwork(input: NetworkInput): Promise<JobNetwork> {
  const network = input.settings.network.trim();
  const subnetwork = input.settings.subnetwork.trim();
  if (subnetwork !== '') return configuredSubnetwork(input, network, subnetwork);
  const vm = input.workerVm;
  // A name is no project: NETWORK naming the worker's own network shares its interface, whichever project (a Shared VPC host) holds it.
  if (vm !== undefined && (network === '' || network === vm.networkName)) return workersOwn(input, vm);
  const name = network === '' ? DEFAULT_NETWORK : network;
  const url = isUrl(name) ? name : `projects/${input.projectId}/global/networks/${name}`;
  return { network: url, subnetworkFor: () => undefined, describe: url };
}

/** SUBNETWORK as given: a URL kept, a name in the job project's region (REGION, else each zone's). */
function configuredSubnetwork(input: NetworkInput, network: string, subnetwork: string): JobNetwork {
  const subnetworkFor = isUrl(subnetwork)
    ? () => subnetwork
    : (region: string) => `projects/${input.projectId}/regions/${input.settings.region.trim() || region}/subnetworks/${subnetwork}`;
  // A named network belongs to the subnetwork's project (a Shared VPC's host), not necessarily the job project.
  const owner = (isUrl(subnetwork) ? projectIn(subnetwork) : undefined) ?? input.projectId;
  const networkUrl = network === '' ? undefined : isUrl(network) ? network : `projects/${owner}/global/networks/${network}`;
  return { network: networkUrl, subnetworkFor, describe: `${networkUrl ?? 'the network'} of subnetwork ${subnetwork}` };
}

/** The network and subnetwork of the worker's own VM, for job VMs in its region. */
async function workersOwn(input: NetworkInput, vm: WorkerVm): Promise<JobNetwork> {
  let own: GceInstanceResource;
  try {
    own = await input.getInstance(vm.projectId, vm.zone, vm.name);
  } catch (err) {
    throw new ConfigError(
      `could not read this worker's own VM ${vm.name} (project ${vm.projectId}, zone ${vm.zone}) to put job VMs on its network and subnetwork: ${errorMessage(err)}; allow it compute.instances.get, or set TRAVIS_WORKER_GCE_NETWORK and TRAVIS_WORKER_GCE_SUBNETWORK`,
      { cause: err },
    );
  }
  const nic = own.networkInterfaces?.[0];
  const network = nic?.network ?? '';
  const networkName = NETWORK_URL.exec(network)?.[1];
  if (networkName === undefined) {
    throw new ConfigError(`instances.get of this worker's VM ${vm.name}: networkInterfaces[0].network is not a network URL (${JSON.stringify(network)}); set TRAVIS_WORKER_GCE_NETWORK and TRAVIS_WORKER_GCE_SUBNETWORK`);
  }
  // A legacy network has no subnetworks.
  if (nic?.subnetwork === undefined || nic.subnetwork === null) return { network, subnetworkFor: () => undefined, describe: network };
  const subnetwork = nic.subnetwork;
  const [, region, subnetworkName] = SUBNETWORK_URL.exec(subnetwork) ?? [];
  if (region === undefined) {
    throw new ConfigError(`instances.get of this worker's VM ${vm.name}: networkInterfaces[0].subnetwork is not a subnetwork URL (${JSON.stringify(subnetwork)}); set TRAVIS_WORKER_GCE_SUBNETWORK`);
  }
  const elsewhere = input.zones.filter((zone) => regionOf(zone) !== region);
  // An auto-mode network names its subnetwork in every region after itself and takes
  // inserts without one; a subnetwork named otherwise is a custom-mode VPC's, which
  // has none to offer a VM in another region unless SUBNETWORK names it.
  if (elsewhere.length > 0 && subnetworkName !== networkName) {
    throw new ConfigError(
      `TRAVIS_WORKER_GCE_ZONES: ${elsewhere.join(', ')} ${elsewhere.length === 1 ? 'is' : 'are'} not in ${region}, the region of this worker's subnetwork ${subnetwork}; set TRAVIS_WORKER_GCE_SUBNETWORK (a URL, or a name each region of the zones has)`,
    );
  }
  return { network, subnetworkFor: (vmRegion) => (vmRegion === region ? subnetwork : undefined), describe: `${network}, subnetwork ${subnetwork} (this worker's own)` };
}
