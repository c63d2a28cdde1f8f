/**
 * Google's client libraries (google-gax) take an API's address as three
 * options, not a URL; the gce backend and a GCE host leaving its group
 * (src/fleet/gce/) both let the operator give a URL.
 */

/** `apiEndpoint`, `port` and `protocol` client options from a base URL. */
export function endpointOptions(endpoint: string): { apiEndpoint: string; port: number; protocol: string } {
  let url: URL;
  try {
    url = new URL(endpoint);
  } catch {
    throw new Error('is not a URL (e.g. https://compute.googleapis.com)');
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') {
    throw new Error('must be an http:// or https:// URL');
  }
  const protocol = url.protocol.slice(0, -1);
  return { apiEndpoint: url.hostname, port: url.port === '' ? (protocol === 'https' ? 443 : 80) : Number(url.port), protocol };
}
