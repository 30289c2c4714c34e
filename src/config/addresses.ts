/**
 * Address lists such as --forwarded-allow-ips and --proxy-allow-from: IPs, CIDRs, proxy-addr's names
 * (loopback, linklocal, uniquelocal) or `*` for everyone. proxy-addr (Express's) does the matching,
 * IPv4-mapped IPv6 peers included.
 */
import proxyAddr from 'proxy-addr';

export type AddressMatcher = (address: string | undefined) => boolean;

/** Why the list cannot be used (to complete "expected ..."), or null if it can. */
export function addressListProblem(items: readonly string[]): string | null {
  try {
    if (!items.includes('*')) proxyAddr.compile([...items]);
    return null;
  } catch (error) {
    return `IP addresses, CIDRs or * (${(error as Error).message})`;
  }
}

/**
 * A peer without an address is on a unix socket: only the local machine can connect there, so it is
 * trusted, as in Gunicorn (nginx in front over a unix socket is the common setup).
 */
export function compileAddressMatcher(items: readonly string[]): AddressMatcher {
  if (items.includes('*')) return () => true;
  const trusts = proxyAddr.compile([...items]);
  return (address) => address === undefined || trusts(address, 0);
}
