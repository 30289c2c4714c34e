/**
 * A hung worker's JavaScript stack: Node's inspector still starts on SIGUSR1 (from a thread of its own)
 * and can pause running JavaScript, so the master starts it on the port the worker reserved at boot
 * and asks for the paused call stack. Nothing listens until a worker hangs.
 */
import { fileURLToPath } from 'node:url';

interface CallFrame {
  functionName: string;
  url: string;
  location: { scriptId: string; lineNumber: number; columnNumber: number };
}

/** The blocked stack as `    at fn (file:line:column)` lines, or null if it could not be had in time. */
export async function captureBlockedStack(pid: number, inspectorPort: number, budgetMs: number): Promise<string | null> {
  const deadline = Date.now() + budgetMs;
  try {
    process.kill(pid, 'SIGUSR1');
    const target = await debuggerUrl(inspectorPort, deadline);
    if (!target) return null;
    return await pausedStack(target, deadline);
  } catch {
    return null;
  }
}

async function debuggerUrl(port: number, deadline: number): Promise<string | null> {
  // The inspector takes a moment to listen: ask until it answers or the budget is spent.
  while (Date.now() < deadline) {
    try {
      const response = await fetch(`http://127.0.0.1:${port}/json/list`, { signal: AbortSignal.timeout(250) });
      const [target] = (await response.json()) as { webSocketDebuggerUrl: string }[];
      if (target) return target.webSocketDebuggerUrl;
    } catch {
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }
  return null;
}

function pausedStack(url: string, deadline: number): Promise<string | null> {
  return new Promise((resolve) => {
    const socket = new WebSocket(url);
    const scripts = new Map<string, string>();
    const finish = (stack: string | null) => {
      clearTimeout(timer);
      socket.close();
      resolve(stack);
    };
    const timer = setTimeout(() => finish(null), Math.max(0, deadline - Date.now()));
    socket.onerror = () => finish(null);
    socket.onopen = () => socket.send(JSON.stringify({ id: 1, method: 'Debugger.enable' }));
    socket.onmessage = (event) => {
      const message = JSON.parse(String(event.data)) as InspectorMessage;
      if (message.method === 'Debugger.scriptParsed') scripts.set(message.params.scriptId, message.params.url);
      else if (message.id === 1) socket.send(JSON.stringify({ id: 2, method: 'Debugger.pause' }));
      else if (message.method === 'Debugger.paused') finish(formatFrames(message.params.callFrames, scripts));
    };
  });
}

/** The inspector protocol's messages this acts on (others pass through its checks unmatched). */
type InspectorMessage =
  | { id: number; method?: undefined }
  | { id?: undefined; method: 'Debugger.scriptParsed'; params: { scriptId: string; url: string } }
  | { id?: undefined; method: 'Debugger.paused'; params: { callFrames: CallFrame[] } };

function formatFrames(frames: CallFrame[], scripts: Map<string, string>): string {
  return frames
    .map(({ functionName, url, location }) => {
      const script = scripts.get(location.scriptId) || url || '<unknown>';
      const file = script.startsWith('file:') ? fileURLToPath(script) : script;
      return `    at ${functionName || '<anonymous>'} (${file}:${location.lineNumber + 1}:${location.columnNumber + 1})`;
    })
    .join('\n');
}
