/**
 * The longest delay a Node.js timer can wait. `setTimeout`,
 * `AbortSignal.timeout` and `timers/promises` store the delay as a signed
 * 32-bit integer: anything longer is replaced by 1 ms (with only a
 * TimeoutOverflowWarning), so a 30-day timeout would fire at once. Every
 * duration the worker turns into a timer (settings and payload timeouts) is
 * refused past this bound, where it is read, naming its field.
 */
export const MAX_TIMER_MS = 2 ** 31 - 1;
