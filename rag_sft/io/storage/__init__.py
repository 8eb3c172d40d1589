"""Where the project's files live and how they are written: `location` (a local folder or an
`s3://` prefix, published whole), the Parquet `warehouse`, `ranges` (a file cut at line ends for
reading on every core), `jsonl_check` (an export read back that way) and `memory` (process
memory settings for streaming a large day)."""
