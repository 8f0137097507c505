import { realpath, stat } from 'node:fs/promises'

/**
 * One file under two names: hard links share an inode, a symlink resolves to the same real path.
 * Either way, writing the output would destroy the input as it is read.
 */
export async function sameFile(a: string, b: string): Promise<boolean> {
  const [sa, sb] = await Promise.all([stat(a, { bigint: true }).catch(() => undefined), stat(b, { bigint: true }).catch(() => undefined)])
  if (!sa || !sb) return false
  // Some file systems (FAT) report inode 0 for every file.
  if (sa.ino !== 0n && sa.dev === sb.dev && sa.ino === sb.ino) return true
  const [ra, rb] = await Promise.all([realpath(a), realpath(b)])
  return ra === rb
}
