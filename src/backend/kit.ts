/**
 * The backend kit: everything a backend (`backends/<name>/`) may import from
 * the engine, and nothing else. The lint rule in eslint.config.js holds the
 * line, so a backend cannot come to depend on the engine's insides (config,
 * queue, job pipeline) and the engine can change them freely.
 *
 * `src/backend/` is the contract and this kit; `backends/` holds the
 * implementations.
 */

/** The contract a backend implements, and the context it is created with. */
export type {
  Backend,
  BackendContext,
  BackendDefinition,
  BackendMetrics,
  BootPhase,
  Instance,
  MachineShape,
  ManagedInstance,
  RunOptions,
  RunResult,
  SettingFamily,
  SettingProblem,
  StartAttributes,
  StartOptions,
  UploadOptions,
} from './contract.js';
/** Settings: a backend declares its own, the engine reads them from the environment. */
export type { SettingsSchema } from '../config/formats.js';
export { settingProblems, type SettingCheck } from './setting-problems.js';
export type { Logger } from '../logger.js';

/** Errors with stable codes; the job pipeline decides from the class whether a job is requeued. */
export {
  ConfigError,
  ConnectionLostError,
  InstanceStartError,
  JobRefusedError,
  NoCapacityError,
  PayloadError,
  SshUnreachableError,
  StaleVmError,
  UploadError,
  errorMessage,
  isMayflyError,
  type ErrorCode,
} from '../errors.js';

/** Calling a cloud API: throttling, retries, classified failures, and checks on what it answers. */
export { CloudApi, CloudCallError, type CloudErrorKind } from './cloud-api.js';
export { MalformedAnswerError, checkAnswer, describeBody, ipAddress, quoteValue } from './malformed-answer.js';
/** Cores of the host handed out so that two jobs' machines never share one (docker cpusets, qemu VMs). */
export { CpuSetPool } from './cpusets.js';
/** Which image a job runs on: the keys to look up, most specific first. */
export { checkImageSelectorType, imageCandidateKeys, selectImageSetting } from './image-keys.js';
/** Describing a value that failed to parse without quoting it (it may be a secret). */
export { invalidJsonProblem } from '../redact.js';

/** The SSH machine an SSH-reached backend's instance builds on, its target and its per-job key. */
export { SshMachine } from '../ssh/machine.js';
export type { SshTarget } from '../ssh/target.js';
export { generateJobKeyPair } from '../ssh/keys.js';
/** The boot script that authorizes a job's key on a cloud VM and can schedule its power-off. */
export { checkUserName, startupScript, type StartupScriptOptions } from './startup-script.js';

/** Waiting that ends when the job's signal aborts; processes and output of locally run jobs. */
export { abortableSleep, raceAbort } from '../util/abort.js';
export { growingDelays } from '../util/backoff.js';
export { timeoutSignal } from '../util/timers.js';
export { killProcessGroup, killProcessTree } from '../util/process-tree.js';
export { outputFlushed } from '../util/streams.js';
export { endpointOptions } from '../util/google-endpoint.js';
export { freePort } from '../util/net.js';
