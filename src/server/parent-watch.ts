// Notices that the process which started the server has gone, so that a primary left behind by a
// wrapper (npx and npm run a shell that runs node; a signal to npx ends npx and that shell only)
// does not keep accepting mail unseen: the caller then stops gracefully, as on SIGTERM.
// Node has no PR_SET_PDEATHSIG; an orphan is reparented (to init or a subreaper), so its ppid
// changes. Owns only the polling; never signals anything.

/** How soon an orphaned server notices; one getppid() per second costs nothing. */
export const PARENT_POLL_MS = 1000;

export type ParentWatchOptions = {
  intervalMs?: number;
  /** The current parent's pid (process.ppid). */
  getPpid?: () => number;
};

/**
 * Calls `onLost` once when the parent changes. A server whose parent is already init (pid 1:
 * started by a service manager that is init, or already detached) is never "orphaned".
 * Returns a function that stops the watch.
 */
export function watchParent(onLost: (parentPid: number) => void, opts: ParentWatchOptions = {}): () => void {
  const getPpid = opts.getPpid ?? (() => process.ppid);
  const parent = getPpid();
  if (parent <= 1) return () => undefined;
  const timer = setInterval(() => {
    if (getPpid() === parent) return;
    clearInterval(timer);
    onLost(parent);
  }, opts.intervalMs ?? PARENT_POLL_MS);
  timer.unref();
  return () => clearInterval(timer);
}
