import { readFileSync } from 'node:fs';
import { getSystemErrorMessage } from 'node:util';
import { SettingError } from '../errors.ts';

/** A file a setting names, read now; one that cannot be read is a SettingError naming the setting and the file. */
export function readSettingFile(setting: string, path: string): Buffer {
  try {
    return readFileSync(path);
  } catch (error) {
    const { errno, code } = error as NodeJS.ErrnoException;
    const reason = errno === undefined ? (error as Error).message : `${getSystemErrorMessage(errno)} (${code})`;
    throw new SettingError(`--${setting} ${path}: cannot read it: ${reason}`);
  }
}
