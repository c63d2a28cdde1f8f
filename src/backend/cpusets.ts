/**
 * The cores of a host, handed out so that two jobs never share one: each
 * container (docker's `CpusetCpus`) or VM (qemu, under `taskset`) is pinned
 * to cores no other running machine of this worker has. travis hands out the lowest free cores; so
 * does this, which keeps a mostly idle host's jobs on the same cores.
 */
export class CpuSetPool {
  readonly #taken: boolean[];

  /** `size` cores, numbered 0 to size-1. */
  constructor(readonly size: number) {
    this.#taken = new Array<boolean>(size).fill(false);
  }

  /** Reserve `count` free cores; returns them as a cpuset (`0,1`), or undefined when too few are free. */
  checkout(count: number): string | undefined {
    const free: number[] = [];
    for (let core = 0; core < this.size && free.length < count; core++) if (!this.#taken[core]) free.push(core);
    if (free.length < count) return undefined;
    for (const core of free) this.#taken[core] = true;
    return free.join(',');
  }

  /** Give back cores from `checkout`; giving back free cores (twice) does nothing. */
  checkin(cpuset: string): void {
    for (const part of cpuset.split(',')) {
      const core = Number(part);
      if (Number.isInteger(core) && core >= 0 && core < this.size) this.#taken[core] = false;
    }
  }

  /** Cores free now. */
  get free(): number {
    return this.#taken.filter((taken) => !taken).length;
  }
}
