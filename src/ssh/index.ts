/** The SSH client side shared by every SSH-reached backend. */
export { SshInstance, DEFAULT_RUN_COMMAND, DEFAULT_SCRIPT_PATH } from './instance.js';
export type { SshInstanceOptions, ExecOptions, ExecResult } from './instance.js';
export type { SshTarget } from './target.js';
export { describeTarget } from './target.js';
export { generateJobKeyPair, type JobKeyPair } from './keys.js';
export { dial, connectOnce, DEFAULT_DIAL_TIMEOUT_MS, DEFAULT_MAX_ATTEMPTS, DEFAULT_RETRY_SLEEP_MS } from './dial.js';
export type { DialOptions, ConnectOptions } from './dial.js';
export { SshConnection } from './connection.js';
export { runCommand, BUILD_PTY, type RunCommandOptions } from './run.js';
export { uploadScript, type UploadScriptOptions } from './upload.js';
