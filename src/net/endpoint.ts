// Where a filter listens, as the operator writes it and as a socket is opened: "host:port",
// "[v6]:port", Postfix's "inet:port@host", or a UNIX socket ("/path", "unix:/path"). The one
// parser the filter keys share ([[milter]], [clamd], [spamd]), so every filter accepts the same
// forms and names the same problems. Pure: never resolves a name, never opens a socket.

export type Endpoint = { readonly kind: 'tcp'; readonly host: string; readonly port: number } | { readonly kind: 'unix'; readonly path: string };

/** Examples for the problem texts, e.g. { tcp: "127.0.0.1:8891", unix: "/run/opendkim/opendkim.sock" }. */
export type EndpointExamples = { readonly tcp: string; readonly unix: string };

/** The endpoint, or a text naming what is wrong with `text`. */
export function parseEndpoint(text: string, examples: EndpointExamples): Endpoint | string {
  // Security: a NUL or a line end would not be the name the OS sees.
  if (/[\x00-\x1f\x7f]/.test(text)) return 'must not contain control characters';
  if (text.startsWith('unix:')) text = text.slice(5);
  if (text.startsWith('/')) return text.length > 1 ? { kind: 'unix', path: text } : 'has no socket path';
  let host: string;
  let portText: string;
  const inet = /^inet:(\d+)@(.+)$/.exec(text);
  const bracketed = /^\[([^\]]+)\]:(\d+)$/.exec(text);
  if (inet !== null) [, portText, host] = inet as unknown as [string, string, string];
  else if (bracketed !== null) [, host, portText] = bracketed as unknown as [string, string, string];
  else {
    const colon = text.lastIndexOf(':');
    if (colon < 0) return `needs a port ("${examples.tcp}") or a UNIX socket path ("${examples.unix}")`;
    host = text.slice(0, colon);
    portText = text.slice(colon + 1);
    if (host.includes(':')) return `an IPv6 address goes in brackets, e.g. "[::1]:${examples.tcp.slice(examples.tcp.lastIndexOf(':') + 1)}"`;
  }
  host = host.replace(/^\[|\]$/g, '');
  const port = /^\d{1,5}$/.test(portText) ? Number(portText) : NaN;
  if (!(port >= 1 && port <= 65535)) return `port "${portText}" must be an integer from 1 to 65535`;
  if (host === '' || !/^[A-Za-z0-9.:-]+$/.test(host)) return `host "${host}" is not an IP address or host name`;
  return { kind: 'tcp', host: host.toLowerCase(), port };
}

/** The endpoint as the operator writes it (and as logs name it). */
export function formatEndpoint(a: Endpoint): string {
  return a.kind === 'unix' ? a.path : a.host.includes(':') ? `[${a.host}]:${a.port}` : `${a.host}:${a.port}`;
}
