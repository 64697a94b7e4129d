// BATV's part of the configuration: the [batv] section, whose keys live in config/keys/batv.ts
// because delivery (signing) reads them too; registered here like every check's part. Data only.

export { batvCheckConfig as batvConfig, type BatvAction, type BatvConfig } from '../../../config/keys/batv.ts';
