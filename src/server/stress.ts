// Adaptive stress mode: when open connections reach limits.stress_on_percent of the connection
// limit, every session's timeouts shrink to limits.stress_timeout_seconds (as Postfix does under
// stress) until the count falls below limits.stress_off_percent; the gap between the two keeps
// the mode from flapping. Judged on every connection opened or closed (two integer compares).
// The count comes from a LoadSource: by default the server process's own connections against
// its share of limits.max_connections (the limit divided by the workers, since the kernel spreads
// connections over them); a node-wide counter can replace it.

/** Where the live connection count and its limit come from. */
export interface LoadSource {
  connections(): number;
  max(): number;
}

export class StressMode {
  readonly #load: LoadSource;
  readonly #onPercent: number;
  readonly #offPercent: number;
  readonly #onChange: (isOn: boolean, connections: number, max: number) => void;
  #isOn = false;

  constructor(opts: { load: LoadSource; onPercent: number; offPercent: number; onChange: (isOn: boolean, connections: number, max: number) => void }) {
    this.#load = opts.load;
    this.#onPercent = opts.onPercent;
    this.#offPercent = opts.offPercent;
    this.#onChange = opts.onChange;
  }

  get isOn(): boolean {
    return this.#isOn;
  }

  /** Called after each connection opens or closes. */
  update(): void {
    const n = this.#load.connections();
    const max = this.#load.max();
    // n * 100 >= max * percent: no division, exact for integers.
    if (!this.#isOn && n * 100 >= max * this.#onPercent) {
      this.#isOn = true;
      this.#onChange(true, n, max);
    } else if (this.#isOn && n * 100 < max * this.#offPercent) {
      this.#isOn = false;
      this.#onChange(false, n, max);
    }
  }
}
