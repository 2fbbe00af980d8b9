"""The context store: million-token volumes read by index and slice.

A volume is files ingested under NANOBOT_HOME/volumes/<name>/: their text in one
memory-mapped file, a line-offset index, per-file metadata, and a chunk index for search.

    storage.py      where volumes live: names, install by rename, crash recovery, list
    volume.py       an open volume: its file table, lines read by number
    grep.py         grep over a volume's mapped text
    walk.py         which files of a folder are ingested (.gitignore, VCS, symlinks)
    writer.py       text.bin and lines.npy, written one file at a time
    ingest.py       a file or folder into a volume, reusing what did not change
    npy.py          .npy files written as a stream
    tokens.py       tokens, term ids, simhashes
    index.py        the chunk index: chunks, BM25 postings, built incrementally
    search.py       ranking chunks for a query (BM25, simhash, embeddings)
    ask.py          answering a question from a volume's best excerpts, cited
    micro_tools.py  ctx_length, ctx_slice, ctx_grep, ctx_search, ctx_summarize, mem_store,
                    mem_recall: what the CLI, the volume browser and the agent call
"""
