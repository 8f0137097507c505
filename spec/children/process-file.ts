/**
 * Run as a child process by resume.test.ts: processFile with checkpoints, to be SIGKILLed at
 * random moments and run again. argv: input output dir guest isolation every [kill-in-save-N];
 * POOL=n in the environment runs the (stateless) guest on a pool of n instances.
 */
import { FileCheckpointStorage, processFile, type Checkpoint, type Isolation } from '../../lib/index.js'
import { example } from '../helpers/reference.js'

const [input, output, dir, guest, isolation, every, killInSave] = process.argv.slice(2) as [
  string, string, string, string, Isolation, string, string | undefined,
]

/** Dies in the middle of its Nth save: the file is being written when the process is killed. */
class DyingStorage extends FileCheckpointStorage {
  private saves = 0
  override async save(checkpoint: Checkpoint): Promise<void> {
    if (++this.saves === Number(killInSave)) {
      const saving = super.save(checkpoint)
      setImmediate(() => process.kill(process.pid, 'SIGKILL'))
      await saving
      process.kill(process.pid, 'SIGKILL')
    }
    return super.save(checkpoint)
  }
}

const result = await processFile(input, output, example(`${guest}.wasm`), {
  isolation,
  bufferSize: 16 * 1024,
  ...(process.env.POOL ? { maxConcurrency: Number(process.env.POOL), stateless: true } : {}),
  ...(guest === 'numberer' || guest === 'wc' ? {} : { delimiter: '\n' }),
  checkpoint: {
    dir,
    every: Number(every),
    ...(killInSave ? { storage: new DyingStorage(dir) } : {}),
    // Progress for the test, which kills this process after a chosen checkpoint.
    onSave: (info) => process.stdout.write(`checkpoint ${info.sequence}\n`),
  },
})
process.stdout.write('result ' + JSON.stringify({ resumedFrom: result.resumedFrom?.inputOffset ?? null, saved: result.checkpointsSaved }) + '\n')
