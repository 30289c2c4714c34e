/** The package's public API, for config files: `import { defineConfig } from 'forkgate'`. */
import type { SettingValues } from './config/settings.ts';

type ActionKey = 'help' | 'version' | 'checkConfig' | 'printConfig' | 'config';

/** What a config file may set: every setting but the command-line actions; addresses as strings. */
export type ForkgateConfig = Partial<Omit<SettingValues, ActionKey | 'bind' | 'env'>> & {
  bind?: string | string[];
  env?: Record<string, string> | string[];
};

/** Identity at run time; gives a TypeScript or JSDoc-typed config file completion and checking. */
export function defineConfig(config: ForkgateConfig): ForkgateConfig {
  return config;
}
