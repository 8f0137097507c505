/** WASI preview 1 as the host sees it: names and numbers only (a leaf: imports nothing). */

export const WASI_MODULE = 'wasi_snapshot_preview1'

/** Where the loader's rewrite of a WASI command imports its memory from (`LoadedGuest.hostMemory`). */
export const HOST_MEMORY = { module: 'wasm-sandbox:host', field: 'memory' } as const

/** Every function of `wasi_snapshot_preview1`; importing any other name is refused at load. */
export const WASI_PREVIEW1_FUNCTIONS: ReadonlySet<string> = new Set([
  'args_get', 'args_sizes_get', 'environ_get', 'environ_sizes_get', 'clock_res_get', 'clock_time_get',
  'fd_advise', 'fd_allocate', 'fd_close', 'fd_datasync', 'fd_fdstat_get', 'fd_fdstat_set_flags',
  'fd_fdstat_set_rights', 'fd_filestat_get', 'fd_filestat_set_size', 'fd_filestat_set_times', 'fd_pread',
  'fd_prestat_get', 'fd_prestat_dir_name', 'fd_pwrite', 'fd_read', 'fd_readdir', 'fd_renumber', 'fd_seek',
  'fd_sync', 'fd_tell', 'fd_write', 'path_create_directory', 'path_filestat_get', 'path_filestat_set_times',
  'path_link', 'path_open', 'path_readlink', 'path_remove_directory', 'path_rename', 'path_symlink',
  'path_unlink_file', 'poll_oneoff', 'proc_exit', 'proc_raise', 'random_get', 'sched_yield', 'sock_accept',
  'sock_recv', 'sock_send', 'sock_shutdown',
])

/** The errno values the host returns itself. */
export const ERRNO_SUCCESS = 0
export const ERRNO_ACCES = 2
export const ERRNO_BADF = 8
export const ERRNO_FAULT = 21
export const ERRNO_INVAL = 28
export const ERRNO_NOSPC = 51
export const ERRNO_NOSYS = 52
export const ERRNO_PERM = 63
export const ERRNO_ROFS = 69
export const ERRNO_SPIPE = 70
export const ERRNO_XDEV = 75
export const ERRNO_NOTCAPABLE = 76

/** `path_open` open flags that create or change a file. */
export const OFLAGS_CREAT = 1
export const OFLAGS_TRUNC = 8
/** `fdflags` that imply writing. */
export const FDFLAGS_APPEND = 1
/** Rights bits that allow changing a file: fd_write, fd_allocate, fd_filestat_set_size. */
export const WRITE_RIGHTS = (1n << 6n) | (1n << 8n) | (1n << 22n)
/** A `filestat`: its size, and where its file type is. */
export const FILESTAT_SIZE = 64
export const FILESTAT_FILETYPE = 16
export const FILETYPE_DIRECTORY = 3

export const CLOCK_REALTIME = 0

/** Functions the host implements itself: standard streams, exit, time, randomness, sockets. */
export const SOCKET_FUNCTIONS = ['sock_accept', 'sock_recv', 'sock_send', 'sock_shutdown'] as const
