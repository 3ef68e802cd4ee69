set datafile separator ','
set terminal png size 900,500
set key top left
modes = system("tail -n +2 'docs/bench/summary.csv' | cut -d, -f1")
set output 'docs/bench/latency.png'
set title 'Latency distribution'
set logscale x
set xlabel 'latency (us)'
set ylabel 'fraction of requests at most this slow'
plot for [m in modes] 'docs/bench/latency.csv' using (strcol(1) eq m ? $2 : NaN):3 with lines lw 2 title m
unset logscale x
set output 'docs/bench/series.png'
set title 'Requests and database reads per second'
set xlabel 'second'
set ylabel 'per second'
plot for [m in modes] 'docs/bench/series.csv' using (strcol(1) eq m ? $2 : NaN):3 with linespoints title m.' requests', for [m in modes] 'docs/bench/series.csv' using (strcol(1) eq m ? $2 : NaN):4 with lines dt 2 title m.' db reads'
set output 'docs/bench/hit-ratio.png'
set title 'Hit ratio per second'
set ylabel 'hits / reads'
set yrange [0:1]
plot for [m in modes] 'docs/bench/series.csv' using (strcol(1) eq m ? $2 : NaN):($5 > 0 ? $6 / $5 : NaN) with linespoints title m
