/**
 * Debian's Chromium, headless, driven over the DevTools protocol with Node's own WebSocket: a page to
 * navigate, evaluate in and capture, and every error the page logged.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { request } from './forkgate.ts';

export const CHROMIUM = ['chromium', 'chromium-browser'].find((command) => spawnSync(command, ['--version']).status === 0);
export const NO_CHROMIUM = 'chromium is not installed (Debian: apt-get install chromium)';

/** The fields of the DevTools events the page's errors are read from. */
interface DevtoolsEvent {
  exceptionDetails: { text: string; exception?: { description?: string } };
  type: string;
  args: { value?: unknown }[];
  entry: { level: string; text: string };
}

/** One page of a headless Chromium of its own (profile, process group), gone with close(). */
export class Browser {
  /** What the page logged as an error: uncaught exceptions, console.error, failed loads. */
  readonly errors: string[] = [];
  private readonly process: ChildProcess;
  private readonly profile: string;
  private socket: WebSocket | null = null;
  private nextId = 1;
  private readonly pending = new Map<number, { resolve: (result: unknown) => void; reject: (error: Error) => void }>();

  private constructor(process: ChildProcess, profile: string) {
    this.process = process;
    this.profile = profile;
  }

  static async open(width = 1200, height = 900): Promise<Browser> {
    const profile = mkdtempSync(join(tmpdir(), 'forkgate-chromium-'));
    const child = spawn(
      CHROMIUM!,
      [
        '--headless=new',
        '--no-sandbox',
        '--disable-gpu',
        `--window-size=${width},${height}`,
        '--remote-debugging-port=0',
        `--user-data-dir=${profile}`,
        'about:blank',
      ],
      // its own process group: its helper processes go with it; its singleton socket's directory in the profile
      { stdio: ['ignore', 'ignore', 'pipe'], detached: true, env: { ...process.env, TMPDIR: profile } },
    );
    const browser = new Browser(child, profile);
    try {
      const devtools = await new Promise<string>((resolve, reject) => {
        let text = '';
        child.stderr!.on('data', (chunk: Buffer) => {
          text += chunk;
          const match = /DevTools listening on (ws:\/\/\S+)/.exec(text);
          if (match) resolve(match[1]!);
        });
        child.once('exit', (code) => reject(new Error(`chromium exited ${code}: ${text}`)));
      });
      const targets = JSON.parse((await request(`http://${new URL(devtools).host}/json/list`)).body) as {
        type: string;
        webSocketDebuggerUrl: string;
      }[];
      await browser.connect(targets.find((target) => target.type === 'page')!.webSocketDebuggerUrl);
      await browser.send('Runtime.enable');
      await browser.send('Log.enable');
      return browser;
    } catch (error) {
      await browser.close();
      throw error;
    }
  }

  send(method: string, params: object = {}): Promise<unknown> {
    const id = this.nextId++;
    this.socket!.send(JSON.stringify({ id, method, params }));
    return new Promise((resolve, reject) => this.pending.set(id, { resolve, reject }));
  }

  navigate(url: string): Promise<unknown> {
    return this.send('Page.navigate', { url });
  }

  async evaluate(expression: string): Promise<unknown> {
    const { result } = (await this.send('Runtime.evaluate', { expression, returnByValue: true })) as { result: { value: unknown } };
    return result.value;
  }

  /** A PNG of the page, written to the temporary directory; returns its path. */
  async screenshot(name: string): Promise<string> {
    const { data } = (await this.send('Page.captureScreenshot')) as { data: string };
    const file = join(tmpdir(), name);
    writeFileSync(file, Buffer.from(data, 'base64'));
    return file;
  }

  async close(): Promise<void> {
    this.socket?.close();
    const gone = this.process.exitCode === null ? new Promise((resolve) => this.process.once('exit', resolve)) : null;
    process.kill(-this.process.pid!, 'SIGKILL');
    await gone;
    // Its helper processes write to the profile until they are gone.
    rmSync(this.profile, { recursive: true, force: true, maxRetries: 10 });
  }

  private connect(url: string): Promise<void> {
    return new Promise((resolve, reject) => {
      const socket = new WebSocket(url);
      socket.addEventListener('open', () => {
        this.socket = socket;
        resolve();
      });
      socket.addEventListener('error', () => reject(new Error(`cannot connect to ${url}`)));
      // A call the browser will never answer fails rather than waits.
      socket.addEventListener('close', () => {
        for (const { reject: fail } of this.pending.values()) fail(new Error('the browser closed its DevTools connection'));
        this.pending.clear();
      });
      socket.addEventListener('message', (event) => this.onMessage(String(event.data)));
    });
  }

  private onMessage(data: string): void {
    const message = JSON.parse(data) as {
      id?: number;
      result?: unknown;
      error?: { message: string };
      method?: string;
      params?: DevtoolsEvent;
    };
    if (message.id !== undefined) {
      const call = this.pending.get(message.id);
      this.pending.delete(message.id);
      if (message.error) call?.reject(new Error(message.error.message));
      else call?.resolve(message.result);
    } else if (message.method === 'Runtime.exceptionThrown') {
      this.errors.push(message.params!.exceptionDetails.exception?.description ?? message.params!.exceptionDetails.text);
    } else if (message.method === 'Runtime.consoleAPICalled' && message.params!.type === 'error') {
      this.errors.push(message.params!.args.map((arg) => String(arg.value)).join(' '));
    } else if (message.method === 'Log.entryAdded' && message.params!.entry.level === 'error') {
      this.errors.push(message.params!.entry.text);
    }
  }
}
