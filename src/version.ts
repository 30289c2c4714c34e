/** Replaced at build time from package.json (scripts/build.ts); the fallback serves type checking. */
declare const FORKGATE_VERSION: string | undefined;
export const VERSION: string = typeof FORKGATE_VERSION === 'string' ? FORKGATE_VERSION : '0.0.0-dev';
