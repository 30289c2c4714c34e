/**
 * --reload, for development: watches the files the app loaded (each worker reports them) and
 * --reload-extra-file, and asks for a rolling reload when one changes; a broken edit fails only the
 * new workers' boot, so the old ones serve on.
 */
import { watch, type FSWatcher } from 'node:fs';

/** Editors save in bursts (write, rename, chmod): one reload per burst. */
const SETTLE_MS = 200;

export class Reloader {
  private readonly watchers = new Map<string, FSWatcher>();
  private readonly onChange: (file: string) => void;
  private timer: NodeJS.Timeout | null = null;

  constructor(onChange: (file: string) => void) {
    this.onChange = onChange;
  }

  /** Adds files to watch; a file replaced by rename is watched again under its name. */
  watch(files: Iterable<string>): void {
    for (const file of files) {
      if (this.watchers.has(file)) continue;
      try {
        const watcher = watch(file, { persistent: false }, () => this.changed(file));
        watcher.on('error', () => this.watchers.delete(file));
        this.watchers.set(file, watcher);
      } catch {
        // gone already: the next worker's report brings it back if the app still loads it
      }
    }
  }

  close(): void {
    for (const watcher of this.watchers.values()) watcher.close();
    this.watchers.clear();
    if (this.timer) clearTimeout(this.timer);
  }

  private changed(file: string): void {
    // Watches end with a rename (atomic save); drop it so the next report watches the new file.
    this.watchers.get(file)?.close();
    this.watchers.delete(file);
    if (this.timer) clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.timer = null;
      this.onChange(file);
    }, SETTLE_MS);
  }
}
