import { main } from "./main.js";

// Entry point of the `mls-dm` command (bin/mls-dm.js runs this file): the one place that exits.
process.exit(await main(process.argv.slice(2)));
