# Written by fashion_mnist with its data inline: `gnuplot plots.gp` in this directory
# redraws accuracy.png, grad_norm.png and reliability_*.png.
set grid lc rgb '#dddddd'
set border lc rgb '#555555'
set style fill solid 0.55 border lc rgb '#333333'
$epochs_softmax_standard_ce << EOD
0 8.98 0.989433
1 80.93 0.326926
2 82.57 0.283106
3 83.98 0.273381
4 83.23 0.26815
5 83.17 0.264001
6 83.42 0.261692
7 84.06 0.259246
8 84.15 0.256743
9 84.22 0.256132
10 83.45 0.253901
11 84.14 0.253103
12 84.11 0.251977
13 84.46 0.250453
14 84.09 0.249791
15 84.24 0.249064
16 84.45 0.248598
17 84.5 0.248011
18 84.33 0.24693
19 84.52 0.247002
20 84.52 0.246732
EOD
$bins_softmax_standard_ce << EOD
0.233333 0 0.231227 5 0.0005
0.3 0.207547 0.304787 53 0.0053
0.366667 0.378378 0.370934 148 0.0148
0.433333 0.45749 0.435785 247 0.0247
0.5 0.486874 0.50223 419 0.0419
0.566667 0.531568 0.56641 491 0.0491
0.633333 0.598272 0.633974 463 0.0463
0.7 0.678439 0.700615 538 0.0538
0.766667 0.7422 0.76792 609 0.0609
0.833333 0.841246 0.834077 674 0.0674
0.9 0.89798 0.902228 990 0.099
0.966667 0.980235 0.986887 5363 0.5363
EOD
$epochs_softmax_standard_ce_ls << EOD
0 8.98 0.898629
1 81.8 0.343795
2 82.74 0.312986
3 83.34 0.307478
4 82.58 0.304603
5 83.05 0.302174
6 83.28 0.299908
7 82.91 0.299411
8 83.35 0.297288
9 83.37 0.296625
10 82.71 0.294707
11 83.45 0.293818
12 83.58 0.2929
13 83.56 0.291738
14 83.56 0.290979
15 83.73 0.290379
16 83.93 0.289751
17 83.82 0.289048
18 83.75 0.28818
19 83.82 0.288192
20 83.76 0.28799
EOD
$bins_softmax_standard_ce_ls << EOD
0.166667 0.176471 0.185149 17 0.0017
0.233333 0.344444 0.242658 90 0.009
0.3 0.4375 0.304539 256 0.0256
0.366667 0.478589 0.368257 397 0.0397
0.433333 0.530645 0.435679 620 0.062
0.5 0.603746 0.499973 694 0.0694
0.566667 0.704334 0.566777 646 0.0646
0.633333 0.805825 0.632364 721 0.0721
0.7 0.880255 0.700844 785 0.0785
0.766667 0.893989 0.767778 915 0.0915
0.833333 0.949055 0.835226 1217 0.1217
0.9 0.979131 0.902385 1773 0.1773
0.966667 0.993044 0.960391 1869 0.1869
EOD
$epochs_softmax_standard_focal << EOD
0 8.98 1.14621
1 82.05 0.287153
2 82.72 0.247656
3 83.23 0.242013
4 81.55 0.235661
5 83.94 0.233607
6 82.75 0.228426
7 81.87 0.22535
8 82.32 0.223555
9 83.64 0.222222
10 83.05 0.219247
11 83.38 0.217154
12 83.76 0.215287
13 83.37 0.213964
14 83.73 0.212054
15 83.55 0.211346
16 84.24 0.210102
17 83.91 0.209065
18 83.96 0.20775
19 83.99 0.207555
20 83.96 0.207237
EOD
$bins_softmax_standard_focal << EOD
0.166667 0 0.199267 1 0.0001
0.233333 0.32 0.24116 25 0.0025
0.3 0.308333 0.306512 120 0.012
0.366667 0.469325 0.36926 326 0.0326
0.433333 0.495108 0.433985 511 0.0511
0.5 0.573691 0.499708 821 0.0821
0.566667 0.675373 0.565639 804 0.0804
0.633333 0.766707 0.633447 823 0.0823
0.7 0.861179 0.699879 814 0.0814
0.766667 0.912195 0.766233 820 0.082
0.833333 0.956705 0.835377 947 0.0947
0.9 0.974401 0.901885 1211 0.1211
0.966667 0.995679 0.976061 2777 0.2777
EOD
$epochs_softmax_standard_sigmoid_mse << EOD
0 8.98 0.69467
1 77.03 0.129477
2 82.88 0.123252
3 83.32 0.117169
4 83.77 0.113577
5 83.92 0.110718
6 83.7 0.108759
7 83.8 0.107613
8 84.11 0.10659
9 84.2 0.105757
10 83.94 0.105027
11 84.24 0.105018
12 84.33 0.104483
13 84.22 0.104143
14 84.34 0.104033
15 84.31 0.103961
16 84.39 0.103882
17 84.35 0.103853
18 84.32 0.103743
19 84.33 0.103704
20 84.35 0.103619
EOD
$bins_softmax_standard_sigmoid_mse << EOD
0.233333 0.2 0.246352 5 0.0005
0.3 0.153846 0.305176 39 0.0039
0.366667 0.380952 0.375619 126 0.0126
0.433333 0.423077 0.436629 286 0.0286
0.5 0.533454 0.501695 553 0.0553
0.566667 0.587253 0.568392 659 0.0659
0.633333 0.670312 0.633131 640 0.064
0.7 0.801508 0.700813 796 0.0796
0.766667 0.849057 0.767628 954 0.0954
0.833333 0.911422 0.834031 1287 0.1287
0.9 0.950285 0.903834 1931 0.1931
0.966667 0.988253 0.96481 2724 0.2724
EOD
$epochs_softmax_saturated_ce << EOD
0 8.98 1.25404
1 76.51 0.408436
2 78.68 0.311175
3 79.39 0.293662
4 79.87 0.2846
5 79.89 0.277949
6 80.5 0.274536
7 80.72 0.270496
8 80.55 0.266235
9 80.83 0.265157
10 80.62 0.262197
11 81.22 0.261477
12 81.48 0.259929
13 81.36 0.258105
14 81.57 0.257654
15 81.3 0.25658
16 81.67 0.256146
17 81.78 0.255454
18 81.75 0.254436
19 81.85 0.25435
20 81.82 0.254071
EOD
$bins_softmax_saturated_ce << EOD
0.3 0.375 0.308336 8 0.0008
0.366667 0.349206 0.375615 63 0.0063
0.433333 0.28777 0.43849 139 0.0139
0.5 0.442368 0.50442 321 0.0321
0.566667 0.511236 0.56691 356 0.0356
0.633333 0.524324 0.634323 370 0.037
0.7 0.569519 0.701469 374 0.0374
0.766667 0.608989 0.767115 445 0.0445
0.833333 0.663399 0.835794 612 0.0612
0.9 0.762087 0.902517 786 0.0786
0.966667 0.936255 0.991308 6526 0.6526
EOD
$epochs_softmax_saturated_ce_ls << EOD
0 8.98 1.19106
1 68.94 0.503619
2 71.34 0.4237
3 72.51 0.40136
4 73.07 0.386528
5 74.25 0.374734
6 74.72 0.366587
7 75.66 0.359972
8 76.02 0.352025
9 76.47 0.347875
10 75.94 0.341949
11 77.15 0.338937
12 77.69 0.33582
13 77.31 0.332953
14 77.98 0.330987
15 77.85 0.32949
16 78.25 0.328226
17 78.19 0.326979
18 78.31 0.326053
19 78.22 0.32578
20 78.25 0.32547
EOD
$bins_softmax_saturated_ce_ls << EOD
0.166667 0 0.191564 2 0.0002
0.233333 0.3 0.244031 40 0.004
0.3 0.381944 0.307318 144 0.0144
0.366667 0.371336 0.368784 307 0.0307
0.433333 0.449275 0.435481 483 0.0483
0.5 0.535769 0.500236 657 0.0657
0.566667 0.567489 0.56608 689 0.0689
0.633333 0.664134 0.634435 658 0.0658
0.7 0.703812 0.701138 682 0.0682
0.766667 0.779188 0.767815 788 0.0788
0.833333 0.850251 0.834994 995 0.0995
0.9 0.900069 0.903221 1451 0.1451
0.966667 0.966817 0.973241 3104 0.3104
EOD
$epochs_softmax_saturated_focal << EOD
0 8.98 1.25712
1 75.82 0.404914
2 77.53 0.305755
3 78.58 0.287574
4 78.76 0.277199
5 79.08 0.268473
6 79.01 0.264699
7 79.89 0.260274
8 79.54 0.253778
9 79.4 0.252095
10 78.63 0.246946
11 80.05 0.24526
12 79.97 0.242976
13 79.77 0.23948
14 80.26 0.238909
15 80.08 0.237254
16 80.42 0.23611
17 80.5 0.234763
18 80.29 0.233433
19 80.46 0.23313
20 80.39 0.232729
EOD
$bins_softmax_saturated_focal << EOD
0.233333 0.333333 0.261098 3 0.0003
0.3 0.142857 0.30673 21 0.0021
0.366667 0.327273 0.373944 110 0.011
0.433333 0.418182 0.436372 220 0.022
0.5 0.428904 0.502918 429 0.0429
0.566667 0.532819 0.56643 518 0.0518
0.633333 0.578947 0.634136 494 0.0494
0.7 0.617706 0.700824 497 0.0497
0.766667 0.68277 0.766328 621 0.0621
0.833333 0.738134 0.835381 611 0.0611
0.9 0.786922 0.901237 887 0.0887
0.966667 0.944892 0.99002 5589 0.5589
EOD
$epochs_softmax_saturated_sigmoid_mse << EOD
0 8.98 0.19151
1 43.66 0.0502325
2 45.72 0.0268593
3 46.43 0.0221447
4 47.28 0.0200671
5 47.66 0.0187166
6 48 0.0179359
7 48.31 0.0172879
8 48.56 0.0167179
9 48.87 0.0163199
10 48.93 0.0161249
11 49.11 0.0159093
12 49.11 0.0156176
13 49.14 0.015508
14 49.12 0.0154129
15 49.19 0.0153653
16 49.23 0.0152883
17 49.25 0.0152714
18 49.27 0.015239
19 49.27 0.0152239
20 49.27 0.01522
EOD
$bins_softmax_saturated_sigmoid_mse << EOD
0.233333 0.666667 0.241174 3 0.0003
0.3 0.25 0.312174 8 0.0008
0.366667 0.117647 0.374123 17 0.0017
0.433333 0.121951 0.439399 41 0.0041
0.5 0.275449 0.508776 167 0.0167
0.566667 0.153846 0.567685 182 0.0182
0.633333 0.148718 0.63406 195 0.0195
0.7 0.141553 0.699215 219 0.0219
0.766667 0.173228 0.766592 254 0.0254
0.833333 0.170418 0.834696 311 0.0311
0.9 0.193478 0.903837 460 0.046
0.966667 0.564411 0.995272 8143 0.8143
EOD
$epochs_mlp_standard_ce << EOD
0 11.15 0.989047
1 85.34 0.294593
2 85.71 0.234363
3 86.49 0.213926
4 86.82 0.19988
5 87.34 0.186505
6 87.83 0.174373
7 88 0.164134
8 88.14 0.153623
9 88.3 0.145001
10 88.68 0.135474
11 88.64 0.125653
12 89.49 0.117113
13 89.35 0.110811
14 89.19 0.103705
15 89.54 0.0986074
16 89.56 0.0936197
17 89.52 0.0898336
18 89.56 0.0872303
19 89.64 0.0853252
20 89.67 0.0845717
EOD
$bins_mlp_standard_ce << EOD
0.233333 0 0.237504 1 0.0001
0.3 0.375 0.299499 8 0.0008
0.366667 0.322581 0.372859 31 0.0031
0.433333 0.367647 0.438372 68 0.0068
0.5 0.524064 0.507022 187 0.0187
0.566667 0.519084 0.566457 262 0.0262
0.633333 0.559829 0.634486 234 0.0234
0.7 0.597403 0.700933 231 0.0231
0.766667 0.654723 0.766503 307 0.0307
0.833333 0.651475 0.833671 373 0.0373
0.9 0.829907 0.904393 535 0.0535
0.966667 0.971016 0.994198 7763 0.7763
EOD
$epochs_mlp_standard_ce_ls << EOD
0 11.15 0.899929
1 85.94 0.299727
2 86.2 0.248878
3 87.26 0.229015
4 86.75 0.216134
5 87.55 0.204659
6 88.31 0.196432
7 88.2 0.187218
8 88.58 0.177954
9 88.6 0.171803
10 88.97 0.164189
11 88.94 0.156891
12 89.59 0.150295
13 89.43 0.144827
14 89.38 0.13946
15 89.72 0.135494
16 89.67 0.131424
17 89.86 0.128402
18 89.73 0.126321
19 89.76 0.12493
20 89.79 0.124231
EOD
$bins_mlp_standard_ce_ls << EOD
0.166667 0 0.184643 3 0.0003
0.233333 0.25 0.247134 20 0.002
0.3 0.307692 0.305054 78 0.0078
0.366667 0.425926 0.371834 162 0.0162
0.433333 0.490706 0.437749 269 0.0269
0.5 0.599432 0.500732 352 0.0352
0.566667 0.661891 0.568071 349 0.0349
0.633333 0.704715 0.634799 403 0.0403
0.7 0.80123 0.700714 488 0.0488
0.766667 0.876833 0.769203 682 0.0682
0.833333 0.940386 0.837848 1191 0.1191
0.9 0.983944 0.906056 3986 0.3986
0.966667 0.987605 0.953868 2017 0.2017
EOD
$epochs_mlp_standard_focal << EOD
0 11.15 1.12838
1 84.72 0.264628
2 84.37 0.205496
3 86.23 0.184459
4 84.79 0.171943
5 86.39 0.158502
6 87.78 0.146793
7 87.62 0.136434
8 87.64 0.125599
9 88.19 0.117571
10 88.47 0.108821
11 88.79 0.10108
12 88.92 0.0928411
13 89.07 0.0869429
14 88.85 0.0809839
15 88.82 0.077023
16 89.07 0.0734204
17 88.91 0.0703064
18 89.08 0.0682352
19 89.02 0.0667797
20 89.02 0.066324
EOD
$bins_mlp_standard_focal << EOD
0.233333 0 0.2493 5 0.0005
0.3 0.153846 0.305288 26 0.0026
0.366667 0.373134 0.370605 67 0.0067
0.433333 0.448087 0.437819 183 0.0183
0.5 0.489209 0.504483 417 0.0417
0.566667 0.581818 0.567042 495 0.0495
0.633333 0.710843 0.633735 498 0.0498
0.7 0.783058 0.701622 484 0.0484
0.766667 0.845343 0.767548 569 0.0569
0.833333 0.901615 0.835318 681 0.0681
0.9 0.936017 0.903203 969 0.0969
0.966667 0.992508 0.9877 5606 0.5606
EOD
$epochs_mlp_standard_sigmoid_mse << EOD
0 11.15 0.689781
1 37.57 0.0252967
2 47.61 0.0282703
3 47.67 0.0330639
4 83.96 0.0500955
5 86.41 0.08598
6 87.41 0.0757953
7 87.65 0.0696947
8 88.13 0.0662075
9 87.74 0.0631864
10 88.38 0.0608629
11 88.08 0.0581994
12 88.79 0.0563982
13 88.99 0.054655
14 88.91 0.0531299
15 89.01 0.0519933
16 89.42 0.0509774
17 89.2 0.050107
18 89.18 0.0496265
19 89.15 0.0492172
20 89.17 0.0490833
EOD
$bins_mlp_standard_sigmoid_mse << EOD
0.233333 0.25 0.246053 8 0.0008
0.3 0.3125 0.301161 16 0.0016
0.366667 0.333333 0.373726 57 0.0057
0.433333 0.481752 0.436492 137 0.0137
0.5 0.442006 0.503312 319 0.0319
0.566667 0.552561 0.565656 371 0.0371
0.633333 0.666667 0.633219 330 0.033
0.7 0.705722 0.700459 367 0.0367
0.766667 0.795259 0.768543 464 0.0464
0.833333 0.833588 0.834528 655 0.0655
0.9 0.90333 0.902836 931 0.0931
0.966667 0.984082 0.986146 6345 0.6345
EOD
$epochs_mlp_saturated_ce << EOD
0 11.15 1.21852
1 79.83 0.370929
2 83.6 0.283453
3 84.13 0.255096
4 84.6 0.241912
5 84.6 0.233904
6 85.07 0.227956
7 85.52 0.222577
8 85.9 0.215224
9 85.7 0.211602
10 85.56 0.207073
11 85.82 0.20332
12 86.27 0.19879
13 85.65 0.196132
14 85.98 0.192164
15 86 0.189749
16 86.42 0.188064
17 86.36 0.1857
18 86.26 0.184655
19 86.29 0.183802
20 86.19 0.183548
EOD
$bins_mlp_saturated_ce << EOD
0.166667 0 0.186714 3 0.0003
0.233333 0.272727 0.246319 11 0.0011
0.3 0.314286 0.30998 35 0.0035
0.366667 0.281879 0.365419 149 0.0149
0.433333 0.401198 0.433838 167 0.0167
0.5 0.468013 0.503628 297 0.0297
0.566667 0.522427 0.56424 379 0.0379
0.633333 0.558659 0.632386 358 0.0358
0.7 0.639474 0.697644 380 0.038
0.766667 0.703704 0.768298 405 0.0405
0.833333 0.76749 0.833522 486 0.0486
0.9 0.852151 0.903437 744 0.0744
0.966667 0.975402 0.991432 6586 0.6586
EOD
$epochs_mlp_saturated_ce_ls << EOD
0 11.15 1.16
1 79.67 0.410831
2 82.49 0.313298
3 82.8 0.295097
4 82.48 0.287292
5 83.35 0.282495
6 84.27 0.27486
7 83.23 0.271917
8 84.32 0.268361
9 83.95 0.265417
10 84.42 0.261979
11 84.44 0.259694
12 85.12 0.256356
13 84.99 0.253706
14 85.22 0.251535
15 85.19 0.249458
16 85.43 0.247748
17 85.32 0.246197
18 85.43 0.244964
19 85.37 0.244659
20 85.53 0.243953
EOD
$bins_mlp_saturated_ce_ls << EOD
0.166667 0.5 0.193983 2 0.0002
0.233333 0.171429 0.242953 35 0.0035
0.3 0.404959 0.305915 121 0.0121
0.366667 0.433657 0.369206 309 0.0309
0.433333 0.547826 0.436631 460 0.046
0.5 0.598958 0.49941 576 0.0576
0.566667 0.637209 0.568664 645 0.0645
0.633333 0.746365 0.633252 619 0.0619
0.7 0.852239 0.700626 670 0.067
0.766667 0.886139 0.768159 808 0.0808
0.833333 0.939878 0.835869 1314 0.1314
0.9 0.979368 0.904332 2278 0.2278
0.966667 0.989367 0.956457 2163 0.2163
EOD
$epochs_mlp_saturated_focal << EOD
0 11.15 1.22277
1 73.77 0.405721
2 79.04 0.31651
3 81.39 0.276533
4 82.82 0.247631
5 83.5 0.238531
6 83.92 0.225417
7 82.58 0.219117
8 81.77 0.212778
9 84.37 0.207583
10 83.38 0.201531
11 83.93 0.196582
12 84.66 0.19397
13 84.58 0.189627
14 84.56 0.185971
15 84.75 0.182948
16 85.34 0.180712
17 85.08 0.178969
18 85.15 0.177392
19 85.05 0.17673
20 85.27 0.176126
EOD
$bins_mlp_saturated_focal << EOD
0.233333 0.259259 0.244189 27 0.0027
0.3 0.356322 0.305606 87 0.0087
0.366667 0.397004 0.36708 267 0.0267
0.433333 0.562347 0.435817 409 0.0409
0.5 0.581717 0.502964 722 0.0722
0.566667 0.662252 0.566685 755 0.0755
0.633333 0.758575 0.632543 758 0.0758
0.7 0.85006 0.700629 827 0.0827
0.766667 0.890332 0.767488 693 0.0693
0.833333 0.918396 0.833075 723 0.0723
0.9 0.957918 0.901905 903 0.0903
0.966667 0.994777 0.986635 3829 0.3829
EOD
$epochs_mlp_saturated_sigmoid_mse << EOD
0 11.07 0.19886
1 46.21 0.00476872
2 48.59 0.00281864
3 47.2 0.00259553
4 47.59 0.00223083
5 46.98 0.00228596
6 51.28 0.00201489
7 51.49 0.00205773
8 53.91 0.00183423
9 53.44 0.00182397
10 53.58 0.00191302
11 53.56 0.00186392
12 52.92 0.00172863
13 54.93 0.00172566
14 54.59 0.00176921
15 54.41 0.00162637
16 54.34 0.00161005
17 54.7 0.00154235
18 54.51 0.00141398
19 54.53 0.00132391
20 54.56 0.00131951
EOD
$bins_mlp_saturated_sigmoid_mse << EOD
0.433333 0 0.426094 2 0.0002
0.5 0.322581 0.512854 62 0.0062
0.566667 0.108696 0.570233 46 0.0046
0.633333 0.175439 0.630174 57 0.0057
0.7 0.264706 0.697619 68 0.0068
0.766667 0.163265 0.770239 49 0.0049
0.833333 0.134831 0.835452 89 0.0089
0.9 0.156463 0.903813 147 0.0147
0.966667 0.565401 0.998786 9480 0.948
EOD
set terminal pngcairo size 1500,1080 font 'DejaVu Sans,12' linewidth 1.5 enhanced
set output 'accuracy.png'
set multiplot layout 2,2 title 'Fashion-MNIST test accuracy per epoch (epoch 0: the initial model)' font ',14'
set xlabel 'epoch'
set ylabel 'test accuracy (%)'
set xrange [0:*]
set key samplen 6 font ',10' opaque
set xtics 5
set format y '%g'
set key bottom right
set yrange [0:100]
set key
set title 'softmax regression'
plot $epochs_softmax_standard_ce using 1:2 with linespoints pt 7 ps 0.5 lw 2 lc rgb '#1f77b4' dt 1 title 'cross-entropy, standard init', \
     $epochs_softmax_standard_ce_ls using 1:2 with linespoints pt 7 ps 0.5 lw 2 lc rgb '#2ca02c' dt 1 title 'cross-entropy, smoothing 0.1, standard init', \
     $epochs_softmax_standard_focal using 1:2 with linespoints pt 7 ps 0.5 lw 2 lc rgb '#ff7f0e' dt 1 title 'softmax focal, gamma 2, standard init', \
     $epochs_softmax_standard_sigmoid_mse using 1:2 with linespoints pt 7 ps 0.5 lw 2 lc rgb '#d62728' dt 1 title 'sigmoid + MSE, standard init', \
     $epochs_softmax_saturated_ce using 1:2 with linespoints pt 7 ps 0.5 lw 2 lc rgb '#1f77b4' dt (12,6) title 'cross-entropy, saturated init', \
     $epochs_softmax_saturated_ce_ls using 1:2 with linespoints pt 7 ps 0.5 lw 2 lc rgb '#2ca02c' dt (12,6) title 'cross-entropy, smoothing 0.1, saturated init', \
     $epochs_softmax_saturated_focal using 1:2 with linespoints pt 7 ps 0.5 lw 2 lc rgb '#ff7f0e' dt (12,6) title 'softmax focal, gamma 2, saturated init', \
     $epochs_softmax_saturated_sigmoid_mse using 1:2 with linespoints pt 7 ps 0.5 lw 2 lc rgb '#d62728' dt (12,6) title 'sigmoid + MSE, saturated init'
set yrange [0:100]
set key
set title 'MLP, 256 ReLU hidden units'
plot $epochs_mlp_standard_ce using 1:2 with linespoints pt 7 ps 0.5 lw 2 lc rgb '#1f77b4' dt 1 title 'cross-entropy, standard init', \
     $epochs_mlp_standard_ce_ls using 1:2 with linespoints pt 7 ps 0.5 lw 2 lc rgb '#2ca02c' dt 1 title 'cross-entropy, smoothing 0.1, standard init', \
     $epochs_mlp_standard_focal using 1:2 with linespoints pt 7 ps 0.5 lw 2 lc rgb '#ff7f0e' dt 1 title 'softmax focal, gamma 2, standard init', \
     $epochs_mlp_standard_sigmoid_mse using 1:2 with linespoints pt 7 ps 0.5 lw 2 lc rgb '#d62728' dt 1 title 'sigmoid + MSE, standard init', \
     $epochs_mlp_saturated_ce using 1:2 with linespoints pt 7 ps 0.5 lw 2 lc rgb '#1f77b4' dt (12,6) title 'cross-entropy, saturated init', \
     $epochs_mlp_saturated_ce_ls using 1:2 with linespoints pt 7 ps 0.5 lw 2 lc rgb '#2ca02c' dt (12,6) title 'cross-entropy, smoothing 0.1, saturated init', \
     $epochs_mlp_saturated_focal using 1:2 with linespoints pt 7 ps 0.5 lw 2 lc rgb '#ff7f0e' dt (12,6) title 'softmax focal, gamma 2, saturated init', \
     $epochs_mlp_saturated_sigmoid_mse using 1:2 with linespoints pt 7 ps 0.5 lw 2 lc rgb '#d62728' dt (12,6) title 'sigmoid + MSE, saturated init'
set yrange [70:92]
set nokey
set title 'softmax regression (zoom)'
plot $epochs_softmax_standard_ce using 1:2 with linespoints pt 7 ps 0.5 lw 2 lc rgb '#1f77b4' dt 1 title 'cross-entropy, standard init', \
     $epochs_softmax_standard_ce_ls using 1:2 with linespoints pt 7 ps 0.5 lw 2 lc rgb '#2ca02c' dt 1 title 'cross-entropy, smoothing 0.1, standard init', \
     $epochs_softmax_standard_focal using 1:2 with linespoints pt 7 ps 0.5 lw 2 lc rgb '#ff7f0e' dt 1 title 'softmax focal, gamma 2, standard init', \
     $epochs_softmax_standard_sigmoid_mse using 1:2 with linespoints pt 7 ps 0.5 lw 2 lc rgb '#d62728' dt 1 title 'sigmoid + MSE, standard init', \
     $epochs_softmax_saturated_ce using 1:2 with linespoints pt 7 ps 0.5 lw 2 lc rgb '#1f77b4' dt (12,6) title 'cross-entropy, saturated init', \
     $epochs_softmax_saturated_ce_ls using 1:2 with linespoints pt 7 ps 0.5 lw 2 lc rgb '#2ca02c' dt (12,6) title 'cross-entropy, smoothing 0.1, saturated init', \
     $epochs_softmax_saturated_focal using 1:2 with linespoints pt 7 ps 0.5 lw 2 lc rgb '#ff7f0e' dt (12,6) title 'softmax focal, gamma 2, saturated init', \
     $epochs_softmax_saturated_sigmoid_mse using 1:2 with linespoints pt 7 ps 0.5 lw 2 lc rgb '#d62728' dt (12,6) title 'sigmoid + MSE, saturated init'
set yrange [70:92]
set nokey
set title 'MLP, 256 ReLU hidden units (zoom)'
plot $epochs_mlp_standard_ce using 1:2 with linespoints pt 7 ps 0.5 lw 2 lc rgb '#1f77b4' dt 1 title 'cross-entropy, standard init', \
     $epochs_mlp_standard_ce_ls using 1:2 with linespoints pt 7 ps 0.5 lw 2 lc rgb '#2ca02c' dt 1 title 'cross-entropy, smoothing 0.1, standard init', \
     $epochs_mlp_standard_focal using 1:2 with linespoints pt 7 ps 0.5 lw 2 lc rgb '#ff7f0e' dt 1 title 'softmax focal, gamma 2, standard init', \
     $epochs_mlp_standard_sigmoid_mse using 1:2 with linespoints pt 7 ps 0.5 lw 2 lc rgb '#d62728' dt 1 title 'sigmoid + MSE, standard init', \
     $epochs_mlp_saturated_ce using 1:2 with linespoints pt 7 ps 0.5 lw 2 lc rgb '#1f77b4' dt (12,6) title 'cross-entropy, saturated init', \
     $epochs_mlp_saturated_ce_ls using 1:2 with linespoints pt 7 ps 0.5 lw 2 lc rgb '#2ca02c' dt (12,6) title 'cross-entropy, smoothing 0.1, saturated init', \
     $epochs_mlp_saturated_focal using 1:2 with linespoints pt 7 ps 0.5 lw 2 lc rgb '#ff7f0e' dt (12,6) title 'softmax focal, gamma 2, saturated init', \
     $epochs_mlp_saturated_sigmoid_mse using 1:2 with linespoints pt 7 ps 0.5 lw 2 lc rgb '#d62728' dt (12,6) title 'sigmoid + MSE, saturated init'
unset multiplot
unset logscale y
set format y '%g'
set autoscale
set xtics autofreq
set terminal pngcairo size 1500,580 font 'DejaVu Sans,12' linewidth 1.5 enhanced
set output 'grad_norm.png'
set multiplot layout 1,2 title 'Mean per-sample L2 norm of dLoss/dlogits per epoch (epoch 0: the initial model)' font ',14'
set xlabel 'epoch'
set ylabel 'mean ||dL_n/dx_n||_2'
set xrange [0:*]
set key samplen 6 font ',10' opaque
set xtics 5
set logscale y
set format y '10^{%L}'
set key top right
set yrange [*:100]
set key
set title 'softmax regression'
plot $epochs_softmax_standard_ce using 1:3 with linespoints pt 7 ps 0.5 lw 2 lc rgb '#1f77b4' dt 1 title 'cross-entropy, standard init', \
     $epochs_softmax_standard_ce_ls using 1:3 with linespoints pt 7 ps 0.5 lw 2 lc rgb '#2ca02c' dt 1 title 'cross-entropy, smoothing 0.1, standard init', \
     $epochs_softmax_standard_focal using 1:3 with linespoints pt 7 ps 0.5 lw 2 lc rgb '#ff7f0e' dt 1 title 'softmax focal, gamma 2, standard init', \
     $epochs_softmax_standard_sigmoid_mse using 1:3 with linespoints pt 7 ps 0.5 lw 2 lc rgb '#d62728' dt 1 title 'sigmoid + MSE, standard init', \
     $epochs_softmax_saturated_ce using 1:3 with linespoints pt 7 ps 0.5 lw 2 lc rgb '#1f77b4' dt (12,6) title 'cross-entropy, saturated init', \
     $epochs_softmax_saturated_ce_ls using 1:3 with linespoints pt 7 ps 0.5 lw 2 lc rgb '#2ca02c' dt (12,6) title 'cross-entropy, smoothing 0.1, saturated init', \
     $epochs_softmax_saturated_focal using 1:3 with linespoints pt 7 ps 0.5 lw 2 lc rgb '#ff7f0e' dt (12,6) title 'softmax focal, gamma 2, saturated init', \
     $epochs_softmax_saturated_sigmoid_mse using 1:3 with linespoints pt 7 ps 0.5 lw 2 lc rgb '#d62728' dt (12,6) title 'sigmoid + MSE, saturated init'
set yrange [*:100]
set key
set title 'MLP, 256 ReLU hidden units'
plot $epochs_mlp_standard_ce using 1:3 with linespoints pt 7 ps 0.5 lw 2 lc rgb '#1f77b4' dt 1 title 'cross-entropy, standard init', \
     $epochs_mlp_standard_ce_ls using 1:3 with linespoints pt 7 ps 0.5 lw 2 lc rgb '#2ca02c' dt 1 title 'cross-entropy, smoothing 0.1, standard init', \
     $epochs_mlp_standard_focal using 1:3 with linespoints pt 7 ps 0.5 lw 2 lc rgb '#ff7f0e' dt 1 title 'softmax focal, gamma 2, standard init', \
     $epochs_mlp_standard_sigmoid_mse using 1:3 with linespoints pt 7 ps 0.5 lw 2 lc rgb '#d62728' dt 1 title 'sigmoid + MSE, standard init', \
     $epochs_mlp_saturated_ce using 1:3 with linespoints pt 7 ps 0.5 lw 2 lc rgb '#1f77b4' dt (12,6) title 'cross-entropy, saturated init', \
     $epochs_mlp_saturated_ce_ls using 1:3 with linespoints pt 7 ps 0.5 lw 2 lc rgb '#2ca02c' dt (12,6) title 'cross-entropy, smoothing 0.1, saturated init', \
     $epochs_mlp_saturated_focal using 1:3 with linespoints pt 7 ps 0.5 lw 2 lc rgb '#ff7f0e' dt (12,6) title 'softmax focal, gamma 2, saturated init', \
     $epochs_mlp_saturated_sigmoid_mse using 1:3 with linespoints pt 7 ps 0.5 lw 2 lc rgb '#d62728' dt (12,6) title 'sigmoid + MSE, saturated init'
unset multiplot
unset logscale y
set format y '%g'
set autoscale
set xtics autofreq
set terminal pngcairo size 1220,1020 font 'DejaVu Sans,11' linewidth 1.5 enhanced
set output 'reliability_ce.png'
set multiplot layout 2,2 title 'Reliability on the test set: cross-entropy (15 equal-width confidence bins)' font ',13'
set xrange [0:1]
set yrange [0:1]
set size ratio -1
set boxwidth 0.06
set xlabel 'confidence'
set ylabel 'accuracy'
set key top left font ',9' samplen 2
set title "softmax regression, standard init\naccuracy 84.52%, ECE 0.0125"
plot $bins_softmax_standard_ce using 1:2 with boxes lc rgb '#1f77b4' title 'accuracy in bin', \
     $bins_softmax_standard_ce using 1:5:(0.02) with boxes fs solid 0.8 noborder lc rgb '#555555' title 'share of test images', \
     $bins_softmax_standard_ce using 1:3 with points pt 7 ps 0.8 lc rgb 'black' title 'mean confidence', \
     x with lines dt 2 lc rgb '#777777' title 'perfect calibration'
set title "MLP, 256 ReLU hidden units, standard init\naccuracy 89.67%, ECE 0.0386"
plot $bins_mlp_standard_ce using 1:2 with boxes lc rgb '#1f77b4' title 'accuracy in bin', \
     $bins_mlp_standard_ce using 1:5:(0.02) with boxes fs solid 0.8 noborder lc rgb '#555555' title 'share of test images', \
     $bins_mlp_standard_ce using 1:3 with points pt 7 ps 0.8 lc rgb 'black' title 'mean confidence', \
     x with lines dt 2 lc rgb '#777777' title 'perfect calibration'
set title "softmax regression, saturated init\naccuracy 81.82%, ECE 0.0798"
plot $bins_softmax_saturated_ce using 1:2 with boxes lc rgb '#1f77b4' title 'accuracy in bin', \
     $bins_softmax_saturated_ce using 1:5:(0.02) with boxes fs solid 0.8 noborder lc rgb '#555555' title 'share of test images', \
     $bins_softmax_saturated_ce using 1:3 with points pt 7 ps 0.8 lc rgb 'black' title 'mean confidence', \
     x with lines dt 2 lc rgb '#777777' title 'perfect calibration'
set title "MLP, 256 ReLU hidden units, saturated init\naccuracy 86.19%, ECE 0.0296"
plot $bins_mlp_saturated_ce using 1:2 with boxes lc rgb '#1f77b4' title 'accuracy in bin', \
     $bins_mlp_saturated_ce using 1:5:(0.02) with boxes fs solid 0.8 noborder lc rgb '#555555' title 'share of test images', \
     $bins_mlp_saturated_ce using 1:3 with points pt 7 ps 0.8 lc rgb 'black' title 'mean confidence', \
     x with lines dt 2 lc rgb '#777777' title 'perfect calibration'
unset multiplot
set size noratio
set autoscale
set terminal pngcairo size 1220,1020 font 'DejaVu Sans,11' linewidth 1.5 enhanced
set output 'reliability_ce_ls.png'
set multiplot layout 2,2 title 'Reliability on the test set: cross-entropy, smoothing 0.1 (15 equal-width confidence bins)' font ',13'
set xrange [0:1]
set yrange [0:1]
set size ratio -1
set boxwidth 0.06
set xlabel 'confidence'
set ylabel 'accuracy'
set key top left font ',9' samplen 2
set title "softmax regression, standard init\naccuracy 83.76%, ECE 0.1024"
plot $bins_softmax_standard_ce_ls using 1:2 with boxes lc rgb '#2ca02c' title 'accuracy in bin', \
     $bins_softmax_standard_ce_ls using 1:5:(0.02) with boxes fs solid 0.8 noborder lc rgb '#555555' title 'share of test images', \
     $bins_softmax_standard_ce_ls using 1:3 with points pt 7 ps 0.8 lc rgb 'black' title 'mean confidence', \
     x with lines dt 2 lc rgb '#777777' title 'perfect calibration'
set title "MLP, 256 ReLU hidden units, standard init\naccuracy 89.79%, ECE 0.0743"
plot $bins_mlp_standard_ce_ls using 1:2 with boxes lc rgb '#2ca02c' title 'accuracy in bin', \
     $bins_mlp_standard_ce_ls using 1:5:(0.02) with boxes fs solid 0.8 noborder lc rgb '#555555' title 'share of test images', \
     $bins_mlp_standard_ce_ls using 1:3 with points pt 7 ps 0.8 lc rgb 'black' title 'mean confidence', \
     x with lines dt 2 lc rgb '#777777' title 'perfect calibration'
set title "softmax regression, saturated init\naccuracy 78.25%, ECE 0.0115"
plot $bins_softmax_saturated_ce_ls using 1:2 with boxes lc rgb '#2ca02c' title 'accuracy in bin', \
     $bins_softmax_saturated_ce_ls using 1:5:(0.02) with boxes fs solid 0.8 noborder lc rgb '#555555' title 'share of test images', \
     $bins_softmax_saturated_ce_ls using 1:3 with points pt 7 ps 0.8 lc rgb 'black' title 'mean confidence', \
     x with lines dt 2 lc rgb '#777777' title 'perfect calibration'
set title "MLP, 256 ReLU hidden units, saturated init\naccuracy 85.53%, ECE 0.0833"
plot $bins_mlp_saturated_ce_ls using 1:2 with boxes lc rgb '#2ca02c' title 'accuracy in bin', \
     $bins_mlp_saturated_ce_ls using 1:5:(0.02) with boxes fs solid 0.8 noborder lc rgb '#555555' title 'share of test images', \
     $bins_mlp_saturated_ce_ls using 1:3 with points pt 7 ps 0.8 lc rgb 'black' title 'mean confidence', \
     x with lines dt 2 lc rgb '#777777' title 'perfect calibration'
unset multiplot
set size noratio
set autoscale
set terminal pngcairo size 1220,1020 font 'DejaVu Sans,11' linewidth 1.5 enhanced
set output 'reliability_focal.png'
set multiplot layout 2,2 title 'Reliability on the test set: softmax focal, gamma 2 (15 equal-width confidence bins)' font ',13'
set xrange [0:1]
set yrange [0:1]
set size ratio -1
set boxwidth 0.06
set xlabel 'confidence'
set ylabel 'accuracy'
set key top left font ',9' samplen 2
set title "softmax regression, standard init\naccuracy 83.96%, ECE 0.0833"
plot $bins_softmax_standard_focal using 1:2 with boxes lc rgb '#ff7f0e' title 'accuracy in bin', \
     $bins_softmax_standard_focal using 1:5:(0.02) with boxes fs solid 0.8 noborder lc rgb '#555555' title 'share of test images', \
     $bins_softmax_standard_focal using 1:3 with points pt 7 ps 0.8 lc rgb 'black' title 'mean confidence', \
     x with lines dt 2 lc rgb '#777777' title 'perfect calibration'
set title "MLP, 256 ReLU hidden units, standard init\naccuracy 89.02%, ECE 0.0247"
plot $bins_mlp_standard_focal using 1:2 with boxes lc rgb '#ff7f0e' title 'accuracy in bin', \
     $bins_mlp_standard_focal using 1:5:(0.02) with boxes fs solid 0.8 noborder lc rgb '#555555' title 'share of test images', \
     $bins_mlp_standard_focal using 1:3 with points pt 7 ps 0.8 lc rgb 'black' title 'mean confidence', \
     x with lines dt 2 lc rgb '#777777' title 'perfect calibration'
set title "softmax regression, saturated init\naccuracy 80.39%, ECE 0.0595"
plot $bins_softmax_saturated_focal using 1:2 with boxes lc rgb '#ff7f0e' title 'accuracy in bin', \
     $bins_softmax_saturated_focal using 1:5:(0.02) with boxes fs solid 0.8 noborder lc rgb '#555555' title 'share of test images', \
     $bins_softmax_saturated_focal using 1:3 with points pt 7 ps 0.8 lc rgb 'black' title 'mean confidence', \
     x with lines dt 2 lc rgb '#777777' title 'perfect calibration'
set title "MLP, 256 ReLU hidden units, saturated init\naccuracy 85.27%, ECE 0.0641"
plot $bins_mlp_saturated_focal using 1:2 with boxes lc rgb '#ff7f0e' title 'accuracy in bin', \
     $bins_mlp_saturated_focal using 1:5:(0.02) with boxes fs solid 0.8 noborder lc rgb '#555555' title 'share of test images', \
     $bins_mlp_saturated_focal using 1:3 with points pt 7 ps 0.8 lc rgb 'black' title 'mean confidence', \
     x with lines dt 2 lc rgb '#777777' title 'perfect calibration'
unset multiplot
set size noratio
set autoscale
set terminal pngcairo size 1220,1020 font 'DejaVu Sans,11' linewidth 1.5 enhanced
set output 'reliability_sigmoid_mse.png'
set multiplot layout 2,2 title 'Reliability on the test set: sigmoid + MSE (15 equal-width confidence bins)' font ',13'
set xrange [0:1]
set yrange [0:1]
set size ratio -1
set boxwidth 0.06
set xlabel 'confidence'
set ylabel 'accuracy'
set key top left font ',9' samplen 2
set title "softmax regression, standard init\naccuracy 84.35%, ECE 0.0475"
plot $bins_softmax_standard_sigmoid_mse using 1:2 with boxes lc rgb '#d62728' title 'accuracy in bin', \
     $bins_softmax_standard_sigmoid_mse using 1:5:(0.02) with boxes fs solid 0.8 noborder lc rgb '#555555' title 'share of test images', \
     $bins_softmax_standard_sigmoid_mse using 1:3 with points pt 7 ps 0.8 lc rgb 'black' title 'mean confidence', \
     x with lines dt 2 lc rgb '#777777' title 'perfect calibration'
set title "MLP, 256 ReLU hidden units, standard init\naccuracy 89.17%, ECE 0.0073"
plot $bins_mlp_standard_sigmoid_mse using 1:2 with boxes lc rgb '#d62728' title 'accuracy in bin', \
     $bins_mlp_standard_sigmoid_mse using 1:5:(0.02) with boxes fs solid 0.8 noborder lc rgb '#555555' title 'share of test images', \
     $bins_mlp_standard_sigmoid_mse using 1:3 with points pt 7 ps 0.8 lc rgb 'black' title 'mean confidence', \
     x with lines dt 2 lc rgb '#777777' title 'perfect calibration'
set title "softmax regression, saturated init\naccuracy 49.27%, ECE 0.4543"
plot $bins_softmax_saturated_sigmoid_mse using 1:2 with boxes lc rgb '#d62728' title 'accuracy in bin', \
     $bins_softmax_saturated_sigmoid_mse using 1:5:(0.02) with boxes fs solid 0.8 noborder lc rgb '#555555' title 'share of test images', \
     $bins_softmax_saturated_sigmoid_mse using 1:3 with points pt 7 ps 0.8 lc rgb 'black' title 'mean confidence', \
     x with lines dt 2 lc rgb '#777777' title 'perfect calibration'
set title "MLP, 256 ReLU hidden units, saturated init\naccuracy 54.56%, ECE 0.4400"
plot $bins_mlp_saturated_sigmoid_mse using 1:2 with boxes lc rgb '#d62728' title 'accuracy in bin', \
     $bins_mlp_saturated_sigmoid_mse using 1:5:(0.02) with boxes fs solid 0.8 noborder lc rgb '#555555' title 'share of test images', \
     $bins_mlp_saturated_sigmoid_mse using 1:3 with points pt 7 ps 0.8 lc rgb 'black' title 'mean confidence', \
     x with lines dt 2 lc rgb '#777777' title 'perfect calibration'
unset multiplot
set size noratio
set autoscale
